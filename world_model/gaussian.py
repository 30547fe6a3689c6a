"""The policy over a Box action space: a Gaussian per action dimension, squashed by tanh
into [-1, 1] (environments rescale [-1, 1] to their bounds).

The prediction head outputs `[B, 2D]`: the Gaussian's means, then raw scales. Sampled
actions are kept *before* the tanh (`arms`): densities then need no atanh, which is
infinite where float32 rounds tanh to +-1, and the tanh's Jacobian, the same for every
policy, cancels out of every ratio and gradient the search and the loss take.
"""

import math

import jax
import jax.numpy as jnp

MIN_STD = 0.01
"""Floor of the standard deviation (pre-tanh units): keeps log-densities finite."""
_STD_OFFSET = math.log(math.e - 1.0)  # softplus(0 + offset) = 1: a fresh head's std is ~1


def split(params: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[..., 2D] head outputs -> (mean [..., D], std [..., D])."""
    mean, raw_std = jnp.split(params, 2, axis=-1)
    return mean, jax.nn.softplus(raw_std + _STD_OFFSET) + MIN_STD


def sample(rng: jax.Array, params: jax.Array, num: int, *, std_scale: float = 1.0) -> jax.Array:
    """`num` pre-tanh actions [B, num, D] from params [B, 2D], the std widened by
    `std_scale`."""
    mean, std = split(params)
    noise = jax.random.normal(rng, (mean.shape[0], num, mean.shape[-1]), mean.dtype)
    return mean[:, None] + std_scale * std[:, None] * noise


def log_prob(params: jax.Array, arms: jax.Array, *, std_scale: float = 1.0) -> jax.Array:
    """Log-density of pre-tanh actions arms [..., S, D] under params [..., 2D] -> [..., S]
    (of the Gaussian before the tanh; the tanh's Jacobian is left out)."""
    mean, std = split(params)
    std = std_scale * std[..., None, :]
    z = (arms - mean[..., None, :]) / std
    return jnp.sum(-0.5 * z**2 - jnp.log(std) - 0.5 * math.log(2 * math.pi), axis=-1)


def entropy(params: jax.Array) -> jax.Array:
    """[..., 2D] -> [...] entropy of the pre-tanh Gaussian."""
    _, std = split(params)
    return jnp.sum(jnp.log(std) + 0.5 * math.log(2 * math.pi * math.e), axis=-1)


def squash(arms: jax.Array) -> jax.Array:
    """Pre-tanh actions -> actions in [-1, 1]."""
    return jnp.tanh(arms)
