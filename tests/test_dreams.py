"""Dream fidelity on a hand-built chain world where a model can be exactly right."""

import jax.numpy as jnp
import numpy as np
import pytest

from agent.dreams import discounted_returns, dream_errors, make_windows
from agent.evaluate import Trajectory
from world_model import ModelOutput, ModelState

N, GAMMA = 12, 0.9  # states 0..N; every action moves one step right and pays 1


def _true_value(state):
    return (1 - GAMMA ** (N - state)) / (1 - GAMMA)


def _chain_model(*, reward_bias=0.0, value_bias=0.0):
    def output(latent, reward):
        batch = latent.shape[0]
        state = jnp.argmax(latent, axis=-1)
        zeros = jnp.zeros((batch, 1))
        return ModelOutput(
            state=ModelState(latent=latent, lstm_h=zeros, lstm_c=zeros,
                             prefix=jnp.zeros(batch), steps=jnp.zeros(batch, jnp.int32)),
            reward=reward, reward_logits=zeros, policy_logits=jnp.zeros((batch, 2)),
            value=_true_value(state) + value_bias, value_logits=zeros)

    def initial_fn(obs):
        return output(obs, jnp.zeros(obs.shape[0]))

    def recurrent_fn(state, action):  # the action does not matter in this world
        return output(jnp.roll(state.latent, 1, axis=-1), jnp.full(action.shape, 1.0 + reward_bias))

    return initial_fn, recurrent_fn


def _windows(horizon=4):
    traj = Trajectory(obs=np.eye(N + 1, dtype=np.float32)[:N], actions=np.zeros(N, np.int32),
                      rewards=np.ones(N, np.float32), policies=np.full((N, 2), 0.5),
                      values=np.zeros(N, np.float32), terminal=True)
    return make_windows([traj], horizon=horizon, discount=GAMMA, clip_rewards=True)


def test_returns_of_a_complete_episode_are_the_true_values():
    windows = _windows()
    np.testing.assert_allclose(windows.returns[:, 0], [_true_value(s) for s in range(N - 4)],
                               rtol=1e-5)


def test_recording_without_a_terminal_is_closed_with_the_search_value():
    # Cut by the recording's length or by a time limit: the episode went on.
    traj = Trajectory(obs=np.zeros((3, 1)), actions=np.zeros(3, np.int32),
                      rewards=np.array([1.0, 2.0, 5.0]), policies=np.ones((3, 1)),
                      values=np.array([0.0, 0.0, 10.0]), terminal=False)
    np.testing.assert_allclose(discounted_returns(traj, discount=0.5, clip_rewards=True),
                               [1 + 0.5 * (1 + 0.5 * 10), 1 + 0.5 * 10, 10])


def test_an_exact_model_dreams_without_error():
    table = dream_errors(*_chain_model(), _windows())
    assert np.isnan(table["reward_error"][0])
    np.testing.assert_allclose(table["reward_error"][1:], 0.0, atol=1e-6)
    np.testing.assert_allclose(table["value_error"], 0.0, atol=1e-5)
    np.testing.assert_allclose(table["policy_kl"], 0.0, atol=1e-6)
    np.testing.assert_allclose(table["latent_cosine"], 1.0, atol=1e-6)


@pytest.mark.parametrize(("bias", "metric"), [({"reward_bias": 0.25}, "reward_error"),
                                               ({"value_bias": 0.5}, "value_error")])
def test_a_perturbed_model_shows_its_error(bias, metric):
    table = dream_errors(*_chain_model(**bias), _windows())
    assert np.all(np.asarray(table[metric][1:]) > 0.2)


def test_windows_need_trajectories_longer_than_the_horizon():
    with pytest.raises(ValueError, match="lower --horizon"):
        _windows(horizon=N)
