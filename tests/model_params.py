"""Perturbed model parameters for tests: a fresh model's zero-initialised heads give
every state the same value, reward and policy, which would pin nothing."""

import jax
import jax.numpy as jnp
import numpy as np


def perturbed(params, *, scale: float, seed: int = 0):
    """params plus N(0, scale^2) noise, drawn in numpy: an eager jax op would compile once
    per parameter shape."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda p: jnp.asarray(np.asarray(p) + scale * rng.normal(size=p.shape).astype(np.float32)),
        params,
    )
