"""EfficientZero-style world model (Flax NNX) and its pure entry points.

The model has four parts: representation (obs -> latent), dynamics (latent, action ->
latent, plus reward or value-prefix logits), prediction (latent -> policy and value
logits) and a SimSiam projection for the consistency loss. Callers never hold the NNX
module: `make_model` splits it into a static, hashable `graphdef` and a `params` pytree,
and every entry point merges them again, so all of them are pure functions of arrays.

Normalisation is LayerNorm rather than EfficientZero's BatchNorm: inference then needs no
batch statistics, carries no mutable state, and behaves the same in training and acting.
"""

import dataclasses
import math
from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from world_model.transforms import from_logits


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """World-model sizes; the defaults are EfficientZero's Atari network."""

    channels: int = 64
    """Channels of the latent state for image observations."""
    num_blocks: int = 1
    """Residual blocks in each of representation, dynamics and prediction."""
    max_flat_image: int = 8192
    """Images of at most this many values (H x W x C, stacked frames included: catch,
    MinAtar, small grids) take the vector path: as `keypoints`, or flattened. An MLP sees
    the whole frame at once where a shallow conv stack must relate distant things through
    depth, and on CPU it trained catch 6x faster per update. 0 keeps every image on the
    conv path."""
    keypoints: int = 0
    """Images on the vector path enter the MLP as this many keypoints instead of their
    pixels: the channels of a small conv net, each turned by a softmax over the frame into
    the expected row and column where it fires (the spatial soft-argmax of Levine et al.,
    2016). A flattened pixel has weights of its own, so what the MLP learns about an object
    in one place says nothing about the next; a keypoint is the object's position as two
    numbers, the same inputs wherever it is. 0: the pixels, flattened."""
    center_frames: bool = False
    """Image inputs enter the network less the mean frame of the run's first replayed play
    (`with_frame_mean`, set before the first update). A frame is mostly background that
    every observation shares, and LayerNorm scales each sample by its own spread: on random
    Pong play an untrained model's latents differ by 0.005 (std over frames; 0.05 centred)
    and training drives that to 0.0002, one latent whatever the frame. Centred, the input
    is what moves (docs/results/atari100k_cpu.md)."""
    downsample: bool = True
    """Image stem of stride-2 convs and avg-pools that halves the image while its side is at
    least 12 px, to a latent 6-11 cells wide (EfficientZero's 96 -> 6); images under 24 px
    (and False) keep their size."""
    head_channels: int = 16
    """Channels the image heads reduce the latent to (1x1 conv) before their MLP."""
    head_hidden: int = 32
    """Hidden width of the policy, value and reward head MLPs."""
    vector_hidden: int = 256
    """MLP encoder width and latent size for vector observations."""
    value_prefix: bool = True
    """Predict the value prefix with an LSTM (EfficientZero) instead of per-step rewards."""
    lstm_hidden: int = 512
    """Hidden size of the value-prefix LSTM."""
    lstm_horizon: int = 5
    """Steps after which the value-prefix LSTM and the prefix are reset to zero."""
    action_embedding: bool = False
    """Learned action embedding; False encodes it as a constant plane (images) or one-hot."""
    action_embedding_dim: int = 16
    """Size of the learned action embedding (used only with action_embedding)."""
    support_size: int = 300
    """Value support Z: 2Z + 1 categorical bins over h(value), the integers -Z..Z."""
    reward_support_size: int = 300
    """Reward / value-prefix support Z: 2Z + 1 bins over h(reward), from -Z to Z bin widths."""
    reward_bin_width: float = 1.0
    """Width of the reward (value-prefix) bins in h's units. With EfficientZero's 1 the
    targets of rewards -1, 0 and +1 all put 58% or more of their mass on bin 0, so a rare
    +1 is learnt as little more than a 0."""
    proj_hidden: int = 1024
    """Hidden width of the consistency projection."""
    proj_out: int = 1024
    """Output size of the consistency projection and its prediction head."""
    pred_hidden: int = 512
    """Hidden width of the projection's prediction head."""

    def __post_init__(self):
        positive = (
            "channels", "head_channels", "head_hidden", "vector_hidden", "lstm_hidden",
            "lstm_horizon", "action_embedding_dim", "support_size", "reward_support_size",
            "proj_hidden", "proj_out", "pred_hidden", "reward_bin_width",
        )  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"model.{name} must be > 0")
        if self.max_flat_image < 0:
            raise ValueError("model.max_flat_image must be >= 0")
        if self.keypoints < 0:
            raise ValueError("model.keypoints must be >= 0")
        if self.num_blocks < 0:
            raise ValueError("model.num_blocks must be >= 0")
        if self.downsample and self.channels % 2:
            raise ValueError("model.channels must be even when model.downsample is on")


@chex.dataclass(frozen=True)
class ModelState:
    """What search carries between model calls (the mctx embedding)."""

    latent: chex.Array  # [B, h, w, C] images or [B, F] vectors, float32 in [0, 1]
    lstm_h: chex.Array  # [B, lstm_hidden] float32; width 0 without value_prefix
    lstm_c: chex.Array  # [B, lstm_hidden] float32
    prefix: chex.Array  # [B] float32, value prefix so far in this LSTM horizon
    steps: chex.Array  # [B] int32, dynamics steps since the last LSTM reset


@chex.dataclass(frozen=True)
class ModelOutput:
    """One model call; logits and decoded scalars are float32."""

    state: ModelState
    reward: chex.Array  # [B] decoded reward of the step into `state` (0 at the root)
    reward_logits: chex.Array  # [B, R] reward or value-prefix logits (zeros at the root)
    policy_logits: chex.Array  # [B, A] logits; Box actions: [B, 2D] Gaussian params (gaussian.py)
    value: chex.Array  # [B] decoded value
    value_logits: chex.Array  # [B, V]


def make_model(
    cfg: ModelConfig, obs_shape: Sequence[int], num_actions: int, *, seed: int,
    action_dim: int = 0,
) -> tuple[nnx.GraphDef, nnx.State]:
    """Builds the model for `obs_shape` ((H, W, C) uint8 or (F,)) and splits it.

    Discrete actions: `num_actions` > 0 and `action_dim` 0. A Box of `action_dim`
    dimensions (actions in [-1, 1]): `num_actions` 0; the policy head is then a squashed
    Gaussian (world_model.gaussian).
    """
    obs_shape = tuple(int(n) for n in obs_shape)
    if len(obs_shape) not in (1, 3) or min(obs_shape) <= 0:
        raise ValueError(f"obs_shape {obs_shape} must be (H, W, C) for images or (F,) for vectors")
    if (num_actions > 0) == (action_dim > 0) or min(num_actions, action_dim) < 0:
        raise ValueError("give num_actions > 0 (Discrete) or action_dim > 0 (Box), not both "
                         f"(got {num_actions}, {action_dim})")
    return nnx.split(_WorldModel(cfg, obs_shape, num_actions, action_dim, rngs=nnx.Rngs(seed)))


def initial_inference(graphdef: nnx.GraphDef, params: nnx.State, obs: jax.Array) -> ModelOutput:
    """obs [B, *obs_shape] -> root output: fresh LSTM state, reward 0."""
    return _initial_step(nnx.merge(graphdef, params), obs)


def recurrent_inference(
    graphdef: nnx.GraphDef, params: nnx.State, state: ModelState, action: jax.Array
) -> ModelOutput:
    """One dynamics step from `state` with action [B] int32 (Box: [B, D] in [-1, 1])."""
    return _recurrent_step(nnx.merge(graphdef, params), state, action)


def project(
    graphdef: nnx.GraphDef, params: nnx.State, latent: jax.Array, *, predict: bool
) -> jax.Array:
    """latent [B, ...] -> [B, proj_out] float32; `predict` adds the SimSiam predictor."""
    return nnx.merge(graphdef, params).project(latent, predict=predict)


def with_frame_mean(graphdef: nnx.GraphDef, params: nnx.State, frames: jax.Array) -> nnx.State:
    """frames [T, H, W, C] uint8, single frames of play -> `params` whose input centring
    (`ModelConfig.center_frames`) subtracts their mean, in every frame of the stack.
    Models without centring are returned unchanged."""
    model = nnx.merge(graphdef, params)
    if model.frame_mean is None:
        return params
    mean = jnp.mean(frames.astype(jnp.float32) / 255.0, axis=0)  # [H, W, C]
    stack = model.frame_mean.shape[-1] // mean.shape[-1]
    model.frame_mean[...] = jnp.tile(mean, (1, 1, stack))  # [H, W, stack * C]
    return nnx.state(model)


def frame_mean(graphdef: nnx.GraphDef, params: nnx.State) -> jax.Array | None:
    """The frame mean [H, W, C] (pixels / 255) a centring model subtracts; None without."""
    model = nnx.merge(graphdef, params)
    return None if model.frame_mean is None else model.frame_mean[...]


def decayed(params: nnx.State) -> nnx.State:
    """The weight-decay mask of `params`: True for learnt weights, False for measured
    statistics (`FrameMean`)."""
    return jax.tree.map(lambda variable: not isinstance(variable, FrameMean), params,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))


def _initial_step(model: "_WorldModel", obs: jax.Array) -> ModelOutput:
    latent = model.represent(obs)
    batch = latent.shape[0]
    carry = jnp.zeros((batch, model.carry_size), jnp.float32)  # [B, lstm_hidden]
    zeros = jnp.zeros((batch,), jnp.float32)  # [B]
    state = ModelState(
        latent=latent, lstm_h=carry, lstm_c=carry, prefix=zeros,
        steps=jnp.zeros((batch,), jnp.int32),
    )  # fmt: skip
    reward_logits = jnp.zeros((batch, 2 * model.cfg.reward_support_size + 1), jnp.float32)
    return _with_prediction(model, state, reward=zeros, reward_logits=reward_logits)


def _recurrent_step(
    model: "_WorldModel", state: ModelState, action: jax.Array, *, grad_scale: float = 1.0
) -> ModelOutput:
    """Dynamics + reward + prediction; `grad_scale` scales the gradient into the latent.

    The loss uses `grad_scale` < 1 (MuZero's dynamics gradient scaling); inference uses 1.
    """
    cfg = model.cfg
    reset = state.steps >= cfg.lstm_horizon  # [B]; a new horizon starts from zero
    lstm_h = jnp.where(reset[:, None], 0.0, state.lstm_h)  # [B, lstm_hidden]
    lstm_c = jnp.where(reset[:, None], 0.0, state.lstm_c)  # [B, lstm_hidden]
    prefix = jnp.where(reset, 0.0, state.prefix)  # [B]
    steps = jnp.where(reset, 0, state.steps) + 1  # [B]

    latent = _scale_gradient(model.dynamics(state.latent, action), grad_scale)
    (lstm_c, lstm_h), reward_logits = model.reward((lstm_c, lstm_h), latent)
    decoded = from_logits(reward_logits, cfg.reward_support_size,
                          bin_width=cfg.reward_bin_width)  # [B]
    if cfg.value_prefix:
        reward = decoded - prefix  # prefix_k - prefix_{k-1}, with prefix_0 = 0 after a reset
        prefix = decoded
    else:
        reward = decoded
    new_state = ModelState(latent=latent, lstm_h=lstm_h, lstm_c=lstm_c, prefix=prefix, steps=steps)
    return _with_prediction(model, new_state, reward=reward, reward_logits=reward_logits)


def _with_prediction(
    model: "_WorldModel", state: ModelState, *, reward: jax.Array, reward_logits: jax.Array
) -> ModelOutput:
    policy_logits, value_logits = model.predict(state.latent)
    return ModelOutput(
        state=state,
        reward=reward,
        reward_logits=reward_logits,
        policy_logits=policy_logits,
        value=from_logits(value_logits, model.cfg.support_size),
        value_logits=value_logits,
    )


def _scale_gradient(x: jax.Array, scale: float) -> jax.Array:
    """Identity forward; multiplies the backward gradient by `scale`."""
    if scale == 1.0:
        return x
    return x * scale + jax.lax.stop_gradient(x) * (1.0 - scale)


def _normalize(x: jax.Array) -> jax.Array:
    """Min-max normalises each sample of x [B, ...] to [0, 1] (EfficientZero's latent)."""
    flat = x.reshape(x.shape[0], -1)  # [B, F]
    # Gather at argmin / argmax: the gradient goes to one element by index. (jnp.min's
    # gradient finds the minimum by equality, which breaks with a recomputed operand.)
    low = jnp.take_along_axis(flat, flat.argmin(axis=-1, keepdims=True), axis=-1)  # [B, 1]
    high = jnp.take_along_axis(flat, flat.argmax(axis=-1, keepdims=True), axis=-1)  # [B, 1]
    scaled = (flat - low) / jnp.maximum(high - low, 1e-5)  # constant latents stay finite
    return scaled.reshape(x.shape)


def _avg_pool(x: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, ceil(H / 2), ceil(W / 2), C] (3x3 window, stride 2, pad 1)."""
    return nnx.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


_MIN_LATENT_SIDE = 6


def _halvings(side: int) -> int:
    """How often the downsampling stem halves an image side: down to 6-11 px, where one
    3x3 conv spans neighbouring objects (a 48 px grid of 8 px cells ends one pixel a cell).
    0 below 24 px: the stem's two strided convs are the fewest it has."""
    count = 0
    while side >= 2 * _MIN_LATENT_SIDE:
        side, count = math.ceil(side / 2), count + 1
    return count if count >= 2 else 0


# Initialisers draw on the host with numpy from the layer's key. jax.random initialisers
# compile one XLA program per parameter shape: tens of seconds per model on a small CPU.
def _host_rng(key: jax.Array) -> np.random.Generator:
    return np.random.default_rng(np.asarray(jax.random.key_data(key)))


def _lecun_normal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """N(0, 1 / fan_in), fan_in = product of all axes but the last (Linear, Conv, Embed)."""
    std = 1.0 / math.sqrt(math.prod(shape[:-1]))
    return jnp.asarray(_host_rng(key).normal(0.0, std, shape).astype(dtype))


def _orthogonal(key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> jax.Array:
    """Random matrix with orthonormal rows or columns (LSTM recurrent kernels)."""
    rows, cols = shape
    normal = _host_rng(key).normal(size=(max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(normal)  # q [max, min] with orthonormal columns
    q = q * np.sign(np.diag(r))  # a uniform (Haar) draw, not biased by QR's sign convention
    return jnp.asarray((q if rows >= cols else q.T).astype(dtype))


def _zeros(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    del key
    return jnp.asarray(np.zeros(shape, dtype))


def _ones(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    del key
    return jnp.asarray(np.ones(shape, dtype))


def _conv(in_ch: int, out_ch: int, *, kernel: int = 3, stride: int = 1, rngs) -> nnx.Conv:
    pad = kernel // 2
    return nnx.Conv(
        in_ch, out_ch, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)),
        use_bias=False, kernel_init=_lecun_normal, rngs=rngs,
    )  # fmt: skip


def _linear(in_features: int, out_features: int, *, zero: bool = False, rngs) -> nnx.Linear:
    """Dense layer; `zero` makes a head's last layer start at uniform logits (value 0)."""
    return nnx.Linear(
        in_features, out_features, kernel_init=_zeros if zero else _lecun_normal,
        bias_init=_zeros, rngs=rngs,
    )  # fmt: skip


def _norm(num_features: int, *, rngs) -> nnx.LayerNorm:
    """LayerNorm over the last (channel) axis."""
    return nnx.LayerNorm(num_features, scale_init=_ones, bias_init=_zeros, rngs=rngs)


class _ResBlock(nnx.Module):
    """conv-LN-relu-conv-LN plus skip, then relu; a strided block convolves the skip."""

    def __init__(self, in_ch: int, out_ch: int, *, stride: int = 1, rngs: nnx.Rngs):
        self.conv1 = _conv(in_ch, out_ch, stride=stride, rngs=rngs)
        self.norm1 = _norm(out_ch, rngs=rngs)
        self.conv2 = _conv(out_ch, out_ch, rngs=rngs)
        self.norm2 = _norm(out_ch, rngs=rngs)
        same_shape = stride == 1 and in_ch == out_ch
        self.skip = None if same_shape else _conv(in_ch, out_ch, stride=stride, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C_in] -> [B, H', W', C_out]
        y = jax.nn.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return jax.nn.relu(y + (x if self.skip is None else self.skip(x)))


class _DenseBlock(nnx.Module):
    """The vector counterpart of `_ResBlock`: Linear-LN-relu-Linear-LN plus skip."""

    def __init__(self, width: int, *, rngs: nnx.Rngs):
        self.fc1 = _linear(width, width, rngs=rngs)
        self.norm1 = _norm(width, rngs=rngs)
        self.fc2 = _linear(width, width, rngs=rngs)
        self.norm2 = _norm(width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:  # [B, F] -> [B, F]
        y = jax.nn.relu(self.norm1(self.fc1(x)))
        return jax.nn.relu(x + self.norm2(self.fc2(y)))


def _blocks(width: int, cfg: ModelConfig, *, spatial: bool, rngs) -> nnx.Sequential:
    block = _ResBlock if spatial else _DenseBlock
    args = (width, width) if spatial else (width,)
    return nnx.Sequential(*[block(*args, rngs=rngs) for _ in range(cfg.num_blocks)])


class FrameMean(nnx.Variable):
    """The mean input frame [H, W, C] centred inputs are measured against; measured on play,
    not learnt (the loss sees it through stop_gradient, weight decay skips it)."""


class _ImageEncoder(nnx.Module):
    """float [B, H, W, C_in] (pixels / 255, centred or not) -> [B, h, w, channels]."""

    def __init__(self, in_ch: int, cfg: ModelConfig, *, halvings: int, rngs: nnx.Rngs):
        ch = cfg.channels
        if halvings:
            # EfficientZero's stem (4 halvings: 96 -> 6); fewer halvings drop trailing pools.
            half = ch // 2
            layers = [
                _conv(in_ch, half, stride=2, rngs=rngs),
                _norm(half, rngs=rngs),
                jax.nn.relu,
                _ResBlock(half, half, rngs=rngs),
                _ResBlock(half, ch, stride=2, rngs=rngs),
            ]
            for _ in range(halvings - 2):
                layers += [_ResBlock(ch, ch, rngs=rngs), _avg_pool]
            self.stem = nnx.Sequential(*layers)
        else:
            self.stem = nnx.Sequential(
                _conv(in_ch, ch, rngs=rngs),
                _norm(ch, rngs=rngs),
                jax.nn.relu,
            )
        self.blocks = _blocks(ch, cfg, spatial=True, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.blocks(self.stem(x))


class _Keypoints(nnx.Module):
    """float [B, H, W, C] (pixels / 255) -> [B, 2 * keypoints]: the keypoints' rows, then
    columns, in [-1, 1].

    3x3 conv - LN - relu - 1x1 conv: the relu lets a channel pick one shade out of several
    (catch's ball 255 and paddle 128 in one channel), which a linear map's softmax cannot.
    From 24 px up the first conv has stride 2, a quarter of the cost: an expected position
    still falls between the conv's positions."""

    def __init__(self, image_shape: tuple[int, int, int], count: int, *, rngs):
        stride = 2 if min(image_shape[:2]) >= 24 else 1
        self.conv1 = _conv(image_shape[-1], count, stride=stride, rngs=rngs)
        self.norm = _norm(count, rngs=rngs)
        self.conv2 = _conv(count, count, kernel=1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        logits = self.conv2(jax.nn.relu(self.norm(self.conv1(x))))
        batch, height, width, count = logits.shape  # [B, h, w, keypoints]
        probs = jax.nn.softmax(logits.reshape(batch, height * width, count), axis=1)
        probs = probs.reshape(logits.shape)  # each channel sums to 1 over the frame
        rows = jnp.einsum("bhwk,h->bk", probs, jnp.linspace(-1.0, 1.0, height))  # [B, keypoints]
        cols = jnp.einsum("bhwk,w->bk", probs, jnp.linspace(-1.0, 1.0, width))  # [B, keypoints]
        return jnp.concatenate([rows, cols], axis=-1)


class _VectorEncoder(nnx.Module):
    """float [B, F] or [B, H, W, C] (pixels / 255) -> [B, vector_hidden]; images enter as
    `cfg.keypoints` keypoints, or flattened."""

    def __init__(self, obs_shape: tuple[int, ...], cfg: ModelConfig, *, rngs: nnx.Rngs):
        width = cfg.vector_hidden
        image = len(obs_shape) == 3
        self.keypoints = (_Keypoints(obs_shape, cfg.keypoints, rngs=rngs)
                          if image and cfg.keypoints else None)
        in_features = 2 * cfg.keypoints if self.keypoints is not None else math.prod(obs_shape)
        self.stem = nnx.Sequential(
            _linear(in_features, width, rngs=rngs),
            _norm(width, rngs=rngs),
            jax.nn.relu,
        )
        self.blocks = _blocks(width, cfg, spatial=False, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.keypoints is not None:
            x = self.keypoints(x)  # [B, 2 * keypoints]
        else:
            x = x.reshape(x.shape[0], -1).astype(jnp.float32)  # [B, F]
        return self.blocks(self.stem(x))


class _Dynamics(nnx.Module):
    """latent [B, ..., C], action [B] (Box: [B, D]) -> next latent (unnormalised), residual
    in the latent."""

    def __init__(self, width: int, num_actions: int, action_dim: int, cfg: ModelConfig, *,
                 spatial: bool, rngs):
        if action_dim:
            # A Box action is its own encoding (a plane per dimension for images), or the
            # input of a learned linear embedding.
            self.embed = (_linear(action_dim, cfg.action_embedding_dim, rngs=rngs)
                          if cfg.action_embedding else None)
            action_features = cfg.action_embedding_dim if cfg.action_embedding else action_dim
        elif cfg.action_embedding:
            self.embed = nnx.Embed(num_actions, cfg.action_embedding_dim,
                                   embedding_init=_lecun_normal, rngs=rngs)
            action_features = cfg.action_embedding_dim
        else:
            # EfficientZero's constant plane a / A for images; a one-hot for vectors.
            self.embed = None
            action_features = 1 if spatial else num_actions
        in_features = width + action_features
        if spatial:
            self.mix = _conv(in_features, width, rngs=rngs)
        else:
            self.mix = _linear(in_features, width, rngs=rngs)
        self.norm = _norm(width, rngs=rngs)
        self.blocks = _blocks(width, cfg, spatial=spatial, rngs=rngs)
        self.num_actions = num_actions
        self.continuous = action_dim > 0
        self.spatial = spatial

    def _encode_action(self, action: jax.Array) -> jax.Array:  # [B] or [B, D] -> [B, E]
        if self.continuous:
            action = action.astype(jnp.float32)
            return action if self.embed is None else self.embed(action)
        if self.embed is not None:
            return self.embed(action)
        if self.spatial:
            return (action.astype(jnp.float32) / self.num_actions)[:, None]
        return jax.nn.one_hot(action, self.num_actions, dtype=jnp.float32)

    def __call__(self, latent: jax.Array, action: jax.Array) -> jax.Array:
        features = self._encode_action(action)  # [B, E]
        spatial_ones = (1,) * (latent.ndim - 2)
        features = features.reshape(features.shape[0], *spatial_ones, features.shape[-1])
        features = jnp.broadcast_to(features, latent.shape[:-1] + features.shape[-1:])
        x = jnp.concatenate([latent, features], axis=-1)  # [B, ..., C + E]
        x = jax.nn.relu(self.norm(self.mix(x)) + latent)
        return self.blocks(x)


class _Reduce(nnx.Module):
    """Image latent [B, h, w, C] -> [B, head_channels * h * w]; vectors pass through."""

    def __init__(self, latent_shape: tuple[int, ...], cfg: ModelConfig, *, rngs):
        if len(latent_shape) == 3:
            self.conv = _conv(latent_shape[-1], cfg.head_channels, kernel=1, rngs=rngs)
            self.norm = _norm(cfg.head_channels, rngs=rngs)
            self.size = cfg.head_channels * latent_shape[0] * latent_shape[1]
        else:
            self.conv = self.norm = None
            self.size = latent_shape[0]

    def __call__(self, latent: jax.Array) -> jax.Array:
        if self.conv is None:
            return latent
        x = jax.nn.relu(self.norm(self.conv(latent)))  # [B, h, w, head_channels]
        return x.reshape(x.shape[0], -1)


class _MLPHead(nnx.Module):
    """[B, F] -> [B, out] float32 logits; one hidden layer, zero-initialised output."""

    def __init__(self, in_features: int, out_features: int, cfg: ModelConfig, *, rngs):
        self.hidden = _linear(in_features, cfg.head_hidden, rngs=rngs)
        self.norm = _norm(cfg.head_hidden, rngs=rngs)
        self.out = _linear(cfg.head_hidden, out_features, zero=True, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(jax.nn.relu(self.norm(self.hidden(x))))


class _RewardHead(nnx.Module):
    """Per-step reward logits from the next latent; the carry passes through unused."""

    def __init__(self, latent_shape: tuple[int, ...], cfg: ModelConfig, *, rngs):
        self.reduce = _Reduce(latent_shape, cfg, rngs=rngs)
        self.head = _MLPHead(self.reduce.size, 2 * cfg.reward_support_size + 1, cfg, rngs=rngs)

    def __call__(self, carry, latent: jax.Array):
        return carry, self.head(self.reduce(latent))


class _ValuePrefixHead(nnx.Module):
    """LSTM over the reduced next latents; its logits are the value prefix of the horizon."""

    def __init__(self, latent_shape: tuple[int, ...], cfg: ModelConfig, *, rngs):
        self.reduce = _Reduce(latent_shape, cfg, rngs=rngs)
        self.lstm = nnx.OptimizedLSTMCell(
            self.reduce.size, cfg.lstm_hidden, kernel_init=_lecun_normal,
            recurrent_kernel_init=_orthogonal, bias_init=_zeros, rngs=rngs,
        )  # fmt: skip
        self.norm = _norm(cfg.lstm_hidden, rngs=rngs)
        self.head = _MLPHead(cfg.lstm_hidden, 2 * cfg.reward_support_size + 1, cfg, rngs=rngs)

    def __call__(self, carry, latent: jax.Array):
        carry, out = self.lstm(carry, self.reduce(latent))  # out [B, lstm_hidden]
        return carry, self.head(jax.nn.relu(self.norm(out)))


class _Prediction(nnx.Module):
    """latent -> (policy logits [B, A] or Gaussian params [B, 2D], value logits [B, V])."""

    def __init__(self, latent_shape: tuple[int, ...], policy_size: int, cfg: ModelConfig, *,
                 rngs):
        spatial = len(latent_shape) == 3
        self.blocks = _blocks(latent_shape[-1], cfg, spatial=spatial, rngs=rngs)
        self.policy_reduce = _Reduce(latent_shape, cfg, rngs=rngs)
        self.value_reduce = _Reduce(latent_shape, cfg, rngs=rngs)
        size = self.policy_reduce.size
        self.policy = _MLPHead(size, policy_size, cfg, rngs=rngs)
        self.value = _MLPHead(size, 2 * cfg.support_size + 1, cfg, rngs=rngs)

    def __call__(self, latent: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = self.blocks(latent)
        return self.policy(self.policy_reduce(x)), self.value(self.value_reduce(x))


class _Projection(nnx.Module):
    """SimSiam projector (latent -> [B, proj_out]) and predictor ([B, proj_out] -> same)."""

    def __init__(self, latent_size: int, cfg: ModelConfig, *, rngs: nnx.Rngs):
        def dense(i, o):
            return _linear(i, o, rngs=rngs)

        def norm(n):
            return _norm(n, rngs=rngs)

        hidden, out = cfg.proj_hidden, cfg.proj_out
        self.projector = nnx.Sequential(
            dense(latent_size, hidden), norm(hidden), jax.nn.relu,
            dense(hidden, hidden), norm(hidden), jax.nn.relu,
            dense(hidden, out), norm(out),
        )  # fmt: skip
        self.predictor = nnx.Sequential(
            dense(out, cfg.pred_hidden), norm(cfg.pred_hidden), jax.nn.relu,
            dense(cfg.pred_hidden, out),
        )  # fmt: skip

    def __call__(self, latent: jax.Array, *, predict: bool) -> jax.Array:
        x = self.projector(latent.reshape(latent.shape[0], -1))  # [B, proj_out]
        if predict:
            x = self.predictor(x)
        return x


class _WorldModel(nnx.Module):
    """All parts of the model; only the functions above call it."""

    def __init__(self, cfg: ModelConfig, obs_shape: tuple[int, ...], num_actions: int,
                 action_dim: int, *, rngs: nnx.Rngs):
        image = len(obs_shape) == 3
        spatial = image and math.prod(obs_shape) > cfg.max_flat_image
        if spatial:
            height, width, in_ch = obs_shape
            halvings = _halvings(min(height, width)) if cfg.downsample else 0
            height, width = (math.ceil(n / 2**halvings) for n in (height, width))
            latent_shape = (height, width, cfg.channels)
            self.encoder = _ImageEncoder(in_ch, cfg, halvings=halvings, rngs=rngs)
        else:
            latent_shape = (cfg.vector_hidden,)
            self.encoder = _VectorEncoder(obs_shape, cfg, rngs=rngs)
        width = latent_shape[-1]
        self.image = image
        self.frame_mean = (FrameMean(jnp.zeros(obs_shape, jnp.float32))
                           if image and cfg.center_frames else None)
        self.dynamics_net = _Dynamics(width, num_actions, action_dim, cfg, spatial=spatial,
                                      rngs=rngs)
        reward_head = _ValuePrefixHead if cfg.value_prefix else _RewardHead
        self.reward_head = reward_head(latent_shape, cfg, rngs=rngs)
        policy_size = num_actions or 2 * action_dim  # logits, or the Gaussian's params
        self.prediction = _Prediction(latent_shape, policy_size, cfg, rngs=rngs)
        self.projection = _Projection(math.prod(latent_shape), cfg, rngs=rngs)
        self.cfg = cfg
        self.carry_size = cfg.lstm_hidden if cfg.value_prefix else 0

    def represent(self, obs: jax.Array) -> jax.Array:  # [B, *obs_shape] -> [B, *latent]
        if self.image:
            obs = obs.astype(jnp.float32) / 255.0  # [B, H, W, C] in [0, 1]
        if self.frame_mean is not None:
            obs = obs - jax.lax.stop_gradient(self.frame_mean[...])
        return _normalize(self.encoder(obs))

    def dynamics(self, latent: jax.Array, action: jax.Array) -> jax.Array:
        return _normalize(self.dynamics_net(latent, action))

    def reward(self, carry, latent: jax.Array):
        """((c, h) [B, lstm_hidden] each, next latent) -> (new carry, reward logits [B, R])."""
        return self.reward_head(carry, latent)

    def predict(self, latent: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.prediction(latent)

    def project(self, latent: jax.Array, *, predict: bool) -> jax.Array:
        return self.projection(latent, predict=predict)
