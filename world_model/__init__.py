"""dreamzero world model: networks, value transforms and the training loss (pure JAX)."""

from world_model import gaussian
from world_model.losses import Batch, LossConfig, compute_loss
from world_model.networks import (
    ModelConfig,
    ModelOutput,
    ModelState,
    initial_inference,
    make_model,
    project,
    recurrent_inference,
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
]
