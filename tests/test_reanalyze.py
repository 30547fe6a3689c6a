import jax.numpy as jnp
import numpy as np
import pytest

from agent.reanalyze import nstep_values, td_horizon


def test_nstep_values_match_hand_computed_returns():
    gamma = 0.5
    rewards = jnp.array([[1.0, 2.0, 3.0, 4.0, 5.0]])  # r_t .. r_{t+4}; K=2, td=3
    alive = jnp.ones((1, 6))
    bootstrap = jnp.array([[10.0, 20.0, 30.0]])
    values = nstep_values(
        rewards, alive, bootstrap, jnp.array([3]), unroll=2, td_steps=3, discount=gamma
    )
    expected = [
        1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 10,
        2 + 0.5 * 3 + 0.25 * 4 + 0.125 * 20,
        3 + 0.5 * 4 + 0.25 * 5 + 0.125 * 30,
    ]
    np.testing.assert_allclose(np.asarray(values[0]), expected, rtol=1e-6)


def test_nstep_values_stop_at_segment_end_and_use_shorter_horizon():
    gamma = 0.5
    rewards = jnp.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    # The segment ends after step t+1: rewards from t+2 on and bootstraps beyond are cut.
    alive = jnp.array([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]])
    bootstrap = jnp.array([[10.0, 20.0, 30.0]])
    values = nstep_values(
        rewards, alive, bootstrap, jnp.array([3]), unroll=2, td_steps=3, discount=gamma
    )
    np.testing.assert_allclose(np.asarray(values[0]), [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0])
    short = nstep_values(
        rewards, jnp.ones((1, 6)), bootstrap, jnp.array([1]), unroll=2, td_steps=3, discount=gamma
    )
    np.testing.assert_allclose(np.asarray(short[0]), [1 + 0.5 * 10, 2 + 0.5 * 20, 3 + 0.5 * 30])


@pytest.mark.parametrize(
    ("age", "expected"), [(0, 5), (29_999, 5), (30_000, 4), (120_000, 1), (10**7, 1)]
)
def test_td_horizon_shrinks_with_age(age, expected):
    horizon = td_horizon(jnp.array([age]), td_steps=5, total_updates=100_000, correct=True)
    assert int(horizon[0]) == expected
    assert (
        int(td_horizon(jnp.array([age]), td_steps=5, total_updates=100_000, correct=False)[0]) == 5
    )
