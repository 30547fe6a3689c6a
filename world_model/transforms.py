"""Value transform h and categorical (two-hot) encodings of scalars.

Values and rewards are squashed by h (Pohlen et al., 2018) and then represented as a
distribution over the 2Z + 1 bins -Z, ..., 0, ..., Z (Z = `support_size`) times the bin
width (EfficientZero's bins are 1 wide), so one network output covers a wide range of
returns and the regression becomes a cross-entropy.
"""

import jax
import jax.numpy as jnp


def h(x: jax.Array, *, eps: float = 1e-3) -> jax.Array:
    """Squash: sign(x) * (sqrt(|x| + 1) - 1) + eps * x, elementwise."""
    return jnp.sign(x) * (jnp.sqrt(jnp.abs(x) + 1.0) - 1.0) + eps * x


def h_inv(y: jax.Array, *, eps: float = 1e-3) -> jax.Array:
    """Exact inverse of `h`, elementwise.

    With s = sqrt(|x| + 1) - 1, h is eps * s^2 + (1 + 2 eps) s = |y|, so s is the positive
    root of a quadratic, written without the cancellation that costs float32 ~1e-4 near 0.
    """
    b = 1.0 + 2.0 * eps
    y_abs = jnp.abs(y)
    s = 2.0 * y_abs / (b + jnp.sqrt(b * b + 4.0 * eps * y_abs))
    return jnp.sign(y) * s * (s + 2.0)


def scalar_to_twohot(x: jax.Array, support_size: int) -> jax.Array:
    """[...] scalars -> [..., 2Z + 1] weights on bins -Z..Z (clipped to the support).

    The two bins around x share the mass so that the expectation equals x exactly.
    """
    x = jnp.clip(x.astype(jnp.float32), -support_size, support_size)  # [...]
    low = jnp.floor(x)  # [...]
    upper_weight = x - low  # [...] in [0, 1)
    low_index = low.astype(jnp.int32) + support_size  # [...] in [0, 2Z]
    high_index = jnp.minimum(low_index + 1, 2 * support_size)  # x == Z puts all mass on 2Z
    num_bins = 2 * support_size + 1
    return (
        jax.nn.one_hot(low_index, num_bins) * (1.0 - upper_weight)[..., None]
        + jax.nn.one_hot(high_index, num_bins) * upper_weight[..., None]
    )  # [..., 2Z + 1]


def twohot_to_scalar(probs: jax.Array, support_size: int) -> jax.Array:
    """[..., 2Z + 1] distribution over bins -Z..Z -> [...] expectation."""
    _check_bins(probs, support_size)
    bins = jnp.arange(-support_size, support_size + 1, dtype=jnp.float32)  # [2Z + 1]
    return jnp.sum(probs.astype(jnp.float32) * bins, axis=-1)


def to_categorical(
    x: jax.Array, support_size: int, *, bin_width: float = 1.0, eps: float = 1e-3
) -> jax.Array:
    """[...] raw scalars -> [..., 2Z + 1] two-hot targets of h(x) on bins of `bin_width`."""
    y = h(x.astype(jnp.float32), eps=eps) / bin_width
    return scalar_to_twohot(y, support_size)


def from_logits(
    logits: jax.Array, support_size: int, *, bin_width: float = 1.0, eps: float = 1e-3
) -> jax.Array:
    """[..., 2Z + 1] logits -> [...] raw scalars: h_inv of the softmax expectation."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)  # [..., 2Z + 1]
    return h_inv(twohot_to_scalar(probs, support_size) * bin_width, eps=eps)


def _check_bins(probs: jax.Array, support_size: int) -> None:
    if probs.shape[-1] != 2 * support_size + 1:
        raise ValueError(
            f"last axis has {probs.shape[-1]} bins but support_size={support_size} needs "
            f"{2 * support_size + 1}; pass the support size the head was built with"
        )
