"""Box action spaces: the squashed-Gaussian policy, the model's continuous actions, the
sampled-arm policy loss, and a whole training run on Pendulum-v1.

The sampled search's golden tests are in test_search.py, the env adapter's in
test_envs.py."""

import dataclasses
import functools
import json
import math
import sys

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agent import config as config_lib
from agent.acting import search_kind
from agent.dreams import dreams_run
from agent.envs import EnvError, resolve_spec
from agent.train import train
from world_model import (
    Batch,
    LossConfig,
    ModelConfig,
    compute_loss,
    gaussian,
    initial_inference,
    make_model,
    recurrent_inference,
)

TINY = ModelConfig(
    channels=4, num_blocks=1, downsample=False, head_channels=2, head_hidden=16,
    vector_hidden=16, lstm_hidden=8, lstm_horizon=2, support_size=5, reward_support_size=5,
    proj_hidden=16, proj_out=16, pred_hidden=16,
)  # fmt: skip
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


def test_gaussian_log_prob_entropy_and_fresh_std():
    params = jnp.array([[0.3, -1.0, 0.0, 2.0]])  # means (0.3, -1), raw stds (0, 2)
    mean, std = gaussian.split(params)
    np.testing.assert_allclose(std[0, 0], 1.0 + gaussian.MIN_STD, rtol=1e-6)  # fresh head
    arms = jnp.array([[[0.3, -1.0], [1.3, 0.0]]])  # [B, S, D]
    expected = [
        sum(-math.log(s) - 0.5 * math.log(2 * math.pi) - 0.5 * ((a - m) / s) ** 2
            for a, m, s in zip(arm, mean[0].tolist(), std[0].tolist(), strict=True))
        for arm in arms[0].tolist()
    ]
    np.testing.assert_allclose(gaussian.log_prob(params, arms)[0], expected, rtol=1e-5)
    entropy = sum(math.log(s) + 0.5 * math.log(2 * math.pi * math.e) for s in std[0].tolist())
    np.testing.assert_allclose(gaussian.entropy(params)[0], entropy, rtol=1e-5)
    samples = gaussian.sample(jax.random.key(0), params, 4000)  # [1, 4000, 2]
    np.testing.assert_allclose(samples[0].mean(0), mean[0], atol=0.1)
    np.testing.assert_allclose(samples[0].std(0), std[0], rtol=0.05)


@pytest.mark.parametrize("obs_shape", [(5,), (8, 8, 3)], ids=["vector", "image"])
def test_model_takes_continuous_actions(obs_shape):
    cfg = dataclasses.replace(TINY, max_flat_image=0)  # images on the conv path
    graphdef, params = make_model(cfg, obs_shape, 0, action_dim=2, seed=0)
    obs = jnp.zeros((3, *obs_shape), jnp.float32 if len(obs_shape) == 1 else jnp.uint8)
    root = initial_inference(graphdef, params, obs)
    assert root.policy_logits.shape == (3, 4)  # a mean and a scale per dimension
    left = recurrent_inference(graphdef, params, root.state, jnp.full((3, 2), -1.0))
    right = recurrent_inference(graphdef, params, root.state, jnp.full((3, 2), 1.0))
    assert not np.allclose(left.state.latent, right.state.latent)  # the action matters
    with pytest.raises(ValueError, match="not both"):
        make_model(cfg, obs_shape, 3, action_dim=2, seed=0)


def test_policy_loss_moves_the_mean_towards_the_weighted_arm():
    """The search weighs arm +0.8 (pre-tanh 1.1) 0.9 and arm -0.8 0.1: the loss must move
    the policy's mean action towards +0.8."""
    graphdef, params = make_model(TINY, (5,), 0, action_dim=1, seed=0)
    b, k = 4, 2
    rng = np.random.default_rng(0)
    arms = np.broadcast_to(np.array([[1.1], [-1.1]], np.float32), (b, k + 1, 2, 1))
    batch = Batch(
        observations=jnp.asarray(rng.normal(size=(b, k + 1, 5)), jnp.float32),
        actions=jnp.asarray(rng.uniform(-1, 1, (b, k, 1)), jnp.float32),
        target_rewards=jnp.zeros((b, k)), target_values=jnp.zeros((b, k + 1)),
        target_policies=jnp.broadcast_to(jnp.array([0.9, 0.1]), (b, k + 1, 2)),
        mask=jnp.ones((b, k + 1)), value_mask=jnp.ones((b, k + 1)),
        reward_mask=jnp.ones((b, k)), weights=jnp.ones(b), target_arms=jnp.asarray(arms))
    optimizer = optax.adam(1e-2)
    loss_cfg = LossConfig(reward_weight=0.0, value_weight=0.0, consistency_weight=0.0)

    @functools.partial(jax.jit, compiler_options=_FAST_COMPILE)
    def update(params, opt_state):
        (_, (metrics, _)), grads = jax.value_and_grad(compute_loss, argnums=1, has_aux=True)(
            graphdef, params, batch, loss_cfg)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    def mean_action(params):
        out = initial_inference(graphdef, params, batch.observations[:, 0])
        return float(jnp.tanh(gaussian.split(out.policy_logits)[0]).mean())

    before, opt_state = mean_action(params), optimizer.init(params)
    for _ in range(40):
        params, opt_state, metrics = update(params, opt_state)
    assert np.isfinite(float(metrics["loss/policy"]))
    # The weighted mean of the arms is 0.72 pre-tanh (0.62 as an action).
    assert abs(before) < 0.05 and mean_action(params) > 0.45, (before, mean_action(params))


def test_pendulum_trains_evaluates_and_dreams(tmp_path):
    smoke = config_lib.smoke()
    cfg = dataclasses.replace(
        smoke, logdir=str(tmp_path), env=dataclasses.replace(smoke.env, name="Pendulum-v1"),
        train=dataclasses.replace(smoke.train, env_steps=300),
        log=dataclasses.replace(smoke.log, progress=False, eval_interval=0, eval_episodes=2))
    result = train(cfg)
    assert result["episodes"] == 2 and all(-2000 < r <= 0 for r in result["returns"])
    spec = json.loads((tmp_path / "config.json").read_text())["env_spec"]
    assert (spec["action_dim"], spec["num_actions"]) == (1, 0)
    table = dreams_run(tmp_path, horizon=3, episodes=1, record_steps=20)
    assert np.isfinite(table["policy_kl"]).all() and np.isfinite(table["value_error"]).all()


def test_dmc_preset_follows_efficientzero_v2s_protocol():
    cfg = config_lib.preset("dmc")
    config_lib.validate(cfg)
    assert cfg.env.name.startswith("dm_control/") and cfg.env.action_repeat == 2
    assert cfg.train.env_steps * cfg.env.action_repeat == 100_000  # env steps
    assert not cfg.train.clips_rewards("gym")  # DMC's 0..1 a step, learnt as they come


def test_dm_control_without_shimmy_names_the_extra(monkeypatch):
    monkeypatch.setattr(gymnasium, "registry", {})  # nothing registered yet
    monkeypatch.setitem(sys.modules, "shimmy", None)  # and shimmy not installed
    with pytest.raises(EnvError, match=r"pip install -e '\.\[dmc\]'"):
        resolve_spec("dm_control/cartpole-swingup-v0")


def test_default_search_is_puct_for_discrete_and_gumbel_for_box_actions():
    cfg = config_lib.quickstart().search
    assert search_kind(cfg, continuous=False) == "muzero"
    assert search_kind(cfg, continuous=True) == "gumbel"
    muzero = dataclasses.replace(cfg, kind="muzero")
    assert search_kind(muzero, continuous=True) == "muzero"  # an explicit kind holds


def test_entropy_bonus_widens_the_policy():
    graphdef, params = make_model(TINY, (5,), 0, action_dim=1, seed=0)
    b, k = 4, 2
    batch = Batch(
        observations=jnp.zeros((b, k + 1, 5)), actions=jnp.zeros((b, k, 1)),
        target_rewards=jnp.zeros((b, k)), target_values=jnp.zeros((b, k + 1)),
        target_policies=jnp.full((b, k + 1, 2), 0.5), mask=jnp.ones((b, k + 1)),
        value_mask=jnp.ones((b, k + 1)), reward_mask=jnp.ones((b, k)),
        weights=jnp.ones(b), target_arms=jnp.zeros((b, k + 1, 2, 1)))
    only_entropy = LossConfig(reward_weight=0.0, value_weight=0.0, policy_weight=0.0,
                              consistency_weight=0.0, entropy_weight=1.0)
    loss_and_grad = jax.jit(jax.value_and_grad(compute_loss, argnums=1, has_aux=True),
                            static_argnums=(0, 3), compiler_options=_FAST_COMPILE)
    (loss, (metrics, _)), grads = loss_and_grad(graphdef, params, batch, only_entropy)
    # The loss is minus the mean entropy over the unroll's K+1 steps, divided by K.
    np.testing.assert_allclose(loss, -metrics["policy/entropy"] * (k + 1) / k, rtol=1e-5)
    stepped = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    (_, (after, _)), _ = loss_and_grad(graphdef, stepped, batch, only_entropy)
    assert after["policy/entropy"] > metrics["policy/entropy"] + 0.01
