"""dreamzero world model: networks, value transforms and the training loss (pure JAX).

Shape legend. These capitals name array dimensions in the comments and docstrings of
agent/, search/ and world_model/, each with one meaning throughout; a dimension that only
one function knows is named by a lowercase word (`[B, depth]`, `[nodes, A]`, `stack`,
`lstm_hidden`).

    B      batch: what one call handles together (a training batch, a search's roots,
           dream windows)
    K      unroll steps of a training window (K + 1 observations: the root and K after
           it); `td` is the TD horizon in steps
    M      updates in one jitted call (`train.updates_per_call`)
    N      envs stepped together (`num_envs`), which are also the replay's rows
    L      the replay's length: the time steps one row holds
    T      time steps of a sequence (an episode, a window of steps, a learning curve)
    A      Discrete actions; a policy over a Box node's arms has S in its place
    D      dimensions of a Box action
    S      arms: the actions a search node over Box actions samples from its policy and
           plans over (`search.arms`)
    F      features of a flat vector (a vector observation or latent)
    H W C  an image's height, width and channels; h w a feature map's height and width
    E      an action's encoding in the dynamics network
    V R    the value and reward heads' bins, 2Z + 1 for a support size Z
"""

from world_model import gaussian
from world_model.losses import Batch, LossConfig, compute_loss
from world_model.networks import (
    ModelConfig,
    ModelOutput,
    ModelState,
    decayed,
    frame_mean,
    initial_inference,
    make_model,
    project,
    recurrent_inference,
    with_frame_mean,
)
from world_model.transforms import (
    from_logits,
    h,
    h_inv,
    scalar_to_twohot,
    to_categorical,
    twohot_to_scalar,
)

__all__ = [
    "Batch",
    "LossConfig",
    "ModelConfig",
    "ModelOutput",
    "ModelState",
    "compute_loss",
    "decayed",
    "frame_mean",
    "from_logits",
    "gaussian",
    "h",
    "h_inv",
    "initial_inference",
    "make_model",
    "project",
    "recurrent_inference",
    "scalar_to_twohot",
    "to_categorical",
    "twohot_to_scalar",
    "with_frame_mean",
]
