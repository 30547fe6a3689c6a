import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from world_model import (
    from_logits,
    h,
    h_inv,
    scalar_to_twohot,
    to_categorical,
    twohot_to_scalar,
)

# Each check runs as one compiled function: op-by-op dispatch compiles every primitive.
_jit = functools.partial(jax.jit, static_argnums=1)


def test_h_matches_its_definition_and_is_odd():
    x = jnp.array([0.0, 3.0, -3.0, 99.0])
    with_eps, without_eps = jax.jit(lambda x: (h(x), h(x, eps=0.0)))(x)
    np.testing.assert_allclose(with_eps, [0.0, 1.003, -1.003, 9.099], rtol=1e-6)
    np.testing.assert_allclose(without_eps, [0.0, 1.0, -1.0, 9.0], rtol=1e-6)


def test_h_inv_inverts_h_over_a_wide_range():
    magnitudes = np.logspace(-6, 6, 61)
    x = jnp.asarray(np.concatenate([-magnitudes, [0.0], magnitudes]), jnp.float32)
    forward, backward = jax.jit(lambda x: (h_inv(h(x)), h(h_inv(x))))(x)
    np.testing.assert_allclose(forward, x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(backward, x, rtol=1e-5, atol=1e-6)
    assert forward[61] == 0.0  # exactly, at x = 0


def test_twohot_splits_mass_between_neighbouring_bins():
    probs = _jit(scalar_to_twohot)(jnp.array([2.25, -0.5]), 5)  # bins -5..5
    expected = np.zeros((2, 11))
    expected[0, 7], expected[0, 8] = 0.75, 0.25  # bins 2 and 3
    expected[1, 4], expected[1, 5] = 0.5, 0.5  # bins -1 and 0
    np.testing.assert_allclose(probs, expected, atol=1e-6)


def test_twohot_round_trip_is_exact_inside_the_support():
    x = jnp.linspace(-10.0, 10.0, 201)
    probs = _jit(scalar_to_twohot)(x, 10)  # [201, 21]
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    assert int((probs > 0).sum(-1).max()) <= 2
    np.testing.assert_allclose(_jit(twohot_to_scalar)(probs, 10), x, atol=1e-5)


def test_twohot_clips_to_the_edge_bins():
    probs = _jit(scalar_to_twohot)(jnp.array([100.0, -100.0, 10.0, -10.0]), 10)
    np.testing.assert_allclose(probs, np.eye(21)[[20, 0, 20, 0]], atol=1e-6)


def test_to_categorical_is_a_distribution_over_h_of_x():
    x = jnp.array([0.0, 0.3, -1.0, 7.5, -120.0, 5000.0])
    probs, expectation, h_x = jax.jit(
        lambda x: (to_categorical(x, 300), twohot_to_scalar(to_categorical(x, 300), 300), h(x))
    )(x)
    assert probs.shape == (6, 601)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    assert (probs >= 0).all()
    np.testing.assert_allclose(expectation, h_x, rtol=1e-5, atol=1e-6)


def test_from_logits_decodes_a_categorical_back_to_the_scalar():
    x = jnp.array([0.0, 0.3, -1.0, 7.5, -120.0, 5000.0])
    # log 0 = -inf is a valid logit: softmax gives the two-hot back.
    decoded = jax.jit(lambda x: from_logits(jnp.log(to_categorical(x, 300)), 300))(x)
    np.testing.assert_allclose(decoded, x, rtol=1e-4, atol=1e-4)


def test_narrow_bins_spread_small_returns_and_decode_them_back():
    x = jnp.array([0.0, 0.19, 0.27, -0.02, 1.0, 80.0])  # returns of a small task
    encode = jax.jit(lambda x: (to_categorical(x, 85, bin_width=0.1), to_categorical(x, 85)))
    narrow, unit = encode(x)
    # h(0.19) = 0.091 and h(0.27) = 0.127: the same pair of unit bins (0 and 1), but the
    # second and the third of the 0.1-wide bins.
    np.testing.assert_allclose(unit[1, [85, 86]], [0.909, 0.091], atol=1e-3)
    np.testing.assert_allclose(narrow[1, [85, 86]], [0.09, 0.91], atol=1e-2)
    np.testing.assert_allclose(narrow[2, [86, 87]], [0.73, 0.27], atol=1e-2)
    decoded = jax.jit(lambda x: from_logits(jnp.log(to_categorical(x, 85, bin_width=0.1)), 85,
                                            bin_width=0.1))(x)
    np.testing.assert_allclose(decoded, x, rtol=1e-4, atol=1e-4)


def test_uniform_logits_decode_to_zero():
    np.testing.assert_allclose(_jit(from_logits)(jnp.zeros((3, 21)), 10), 0.0, atol=1e-5)


def test_a_support_mismatch_is_reported():
    with pytest.raises(ValueError, match="support_size"):
        twohot_to_scalar(jnp.zeros((2, 21)), 300)
