import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from model_params import perturbed

from world_model import Batch, LossConfig, ModelConfig, compute_loss, initial_inference, make_model
from world_model.losses import _negative_cosine, _value_prefix_targets

CFG = ModelConfig(
    channels=4, num_blocks=0, downsample=False, head_channels=4, head_hidden=16,
    vector_hidden=16, lstm_hidden=16, lstm_horizon=2, support_size=10, reward_support_size=10,
    proj_hidden=32, proj_out=32, pred_hidden=16,
)  # fmt: skip
OBS_SHAPE = (5,)  # vectors compile fastest; the image path is checked below
IMAGE_SHAPE = (6, 6, 2)
NUM_ACTIONS = 3
B, K = 4, 3

# graphdef and LossConfig are static (hashable). Tiny models run a few times: compiling
# without LLVM optimisations halves the test's time on a small CPU.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}
_loss_and_grad = jax.jit(
    jax.value_and_grad(compute_loss, argnums=1, has_aux=True),
    static_argnums=(0, 3),
    compiler_options=_FAST_COMPILE,
)


def _batch(obs_shape=OBS_SHAPE, *, seed=0) -> Batch:
    rng = np.random.default_rng(seed)
    if len(obs_shape) == 3:
        observations = rng.integers(0, 256, (B, K + 1, *obs_shape), dtype=np.uint8)
    else:
        observations = rng.normal(size=(B, K + 1, *obs_shape)).astype(np.float32)
    policies = rng.dirichlet(np.ones(NUM_ACTIONS), (B, K + 1)).astype(np.float32)
    mask = np.ones((B, K + 1), np.float32)
    mask[1, 2:] = 0.0  # sample 1's segment ends after t+1
    mask[3, 1:] = 0.0  # sample 3 has no next observation
    return Batch(
        observations=jnp.asarray(observations),
        actions=jnp.asarray(rng.integers(0, NUM_ACTIONS, (B, K)), jnp.int32),
        target_rewards=jnp.asarray(rng.choice([-1.0, 0.0, 1.0], (B, K)), jnp.float32),
        target_values=jnp.asarray(rng.uniform(-3.0, 3.0, (B, K + 1)), jnp.float32),
        target_policies=jnp.asarray(policies),
        mask=jnp.asarray(mask),
        value_mask=jnp.ones((B, K + 1), jnp.float32),
        reward_mask=jnp.ones((B, K), jnp.float32),
        weights=jnp.asarray(rng.uniform(0.5, 1.0, B), jnp.float32),
    )


@pytest.fixture(scope="module")
def model():
    return make_model(CFG, OBS_SHAPE, NUM_ACTIONS, seed=0)


def _finite(tree) -> bool:
    return all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree.leaves(tree))


def test_loss_metrics_priorities_and_gradients(model):
    graphdef, params = model
    batch = _batch()
    (loss, (metrics, priorities)), grads = _loss_and_grad(graphdef, params, batch, LossConfig())
    assert loss.shape == () and loss.dtype == jnp.float32 and np.isfinite(loss)
    for name in ("value", "reward", "policy", "consistency", "total"):
        assert np.isfinite(metrics[f"loss/{name}"]), name
    assert "value/mean" in metrics
    assert -1.0 <= metrics["loss/consistency"] <= 1.0
    targets = np.asarray(batch.target_policies[:, 0])
    np.testing.assert_allclose(metrics["policy/target_entropy"],
                               -(targets * np.log(targets)).sum(-1).mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["loss/total"], loss)

    assert priorities.shape == (B,) and (priorities > 0).all()
    assert _finite(grads)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) > 0.0


def test_latent_state_std_measures_the_spread_of_root_latents(model):
    graphdef, params = model
    batch = _batch()
    metrics = _loss_and_grad(graphdef, params, batch, LossConfig())[0][1][0]
    latents = np.asarray(initial_inference(graphdef, params, batch.observations[:, 0]).state.latent)
    expected = latents.reshape(B, -1).std(axis=0).mean()
    assert expected > 1e-3
    np.testing.assert_allclose(metrics["latent/state_std"], expected, rtol=1e-4)
    # One observation everywhere: a collapsed representation looks like this.
    same = batch.replace(observations=jnp.broadcast_to(batch.observations[:1],
                                                       batch.observations.shape))
    metrics = _loss_and_grad(graphdef, params, same, LossConfig())[0][1][0]
    assert float(metrics["latent/state_std"]) < 1e-6


def test_priorities_are_the_root_value_error(model):
    graphdef, params = model
    params = perturbed(params, scale=0.3)  # zero-initialised heads would give every root value 0
    batch = _batch()
    (_, (metrics, priorities)), _ = _loss_and_grad(graphdef, params, batch, LossConfig())
    # With a target far above every root value v the priorities give v back; it must
    # match the root-value metric and explain the priorities of the real targets.
    far = batch.replace(target_values=batch.target_values.at[:, 0].set(1e3))
    far_priorities = _loss_and_grad(graphdef, params, far, LossConfig())[0][1][1]
    root_value = 1e3 - np.asarray(far_priorities) + 1e-6  # [B]
    assert np.abs(root_value).max() > 0.1
    np.testing.assert_allclose(root_value.mean(), metrics["value/mean"], atol=2e-4)
    expected = np.abs(root_value - np.asarray(batch.target_values[:, 0])) + 1e-6
    np.testing.assert_allclose(priorities, expected, atol=2e-4)


def test_reward_targets_take_the_reward_bins_and_value_targets_the_value_bins(model):
    graphdef, params = model
    params = perturbed(params, scale=0.3)
    batch = _batch()
    narrow = make_model(dataclasses.replace(CFG, reward_bin_width=0.1), OBS_SHAPE, NUM_ACTIONS,
                        seed=0)[0]  # the same parameter shapes: the supports keep their sizes
    wide_metrics = _loss_and_grad(graphdef, params, batch, LossConfig())[0][1][0]
    narrow_metrics = _loss_and_grad(narrow, params, batch, LossConfig())[0][1][0]
    np.testing.assert_allclose(narrow_metrics["loss/value"], wide_metrics["loss/value"],
                               rtol=1e-6)
    # The same logits against other targets: rewards of +-1 fall 4 bins from 0 instead of 1.
    assert abs(float(narrow_metrics["loss/reward"] - wide_metrics["loss/reward"])) > 0.01


def test_masked_steps_leave_loss_and_gradient_unchanged(model):
    graphdef, params = model
    params = perturbed(params, scale=0.3)  # a zero-initialised policy head ignores its targets
    batch = _batch()
    rng = np.random.default_rng(1)
    masked = np.asarray(batch.mask) == 0.0  # [B, K+1]
    observations = np.array(batch.observations)
    observations[masked] = rng.normal(size=observations[masked].shape)
    policies = np.array(batch.target_policies)
    policies[masked] = rng.dirichlet(np.ones(NUM_ACTIONS), int(masked.sum()))
    changed = batch.replace(
        observations=jnp.asarray(observations), target_policies=jnp.asarray(policies)
    )
    assert not np.array_equal(changed.observations, batch.observations)

    (loss, (metrics, _)), grads = _loss_and_grad(graphdef, params, batch, LossConfig())
    (loss_c, (metrics_c, _)), grads_c = _loss_and_grad(graphdef, params, changed, LossConfig())
    np.testing.assert_array_equal(loss, loss_c)
    for name, value in metrics.items():
        np.testing.assert_array_equal(value, metrics_c[name], err_msg=name)
    for g, g_c in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_c), strict=True):
        np.testing.assert_array_equal(g, g_c)

    # The same change at a real step does count: the check above can fail.
    policies[0, 2] = policies[0, 2][::-1]
    real_change = changed.replace(target_policies=jnp.asarray(policies))
    assert _loss_and_grad(graphdef, params, real_change, LossConfig())[0][0] != loss


def test_unknown_value_and_reward_targets_are_not_learnt(model):
    """Where `value_mask` / `reward_mask` are 0 (targets reaching past a time-limit cut)
    the targets do not touch the loss or its gradient; elsewhere they do."""
    graphdef, params = model
    params = perturbed(params, scale=0.3)
    batch = _batch()
    value_mask = np.ones((B, K + 1), np.float32)
    value_mask[2, 3:] = 0.0
    reward_mask = np.ones((B, K), np.float32)
    reward_mask[2, 2:] = 0.0
    batch = batch.replace(value_mask=jnp.asarray(value_mask), reward_mask=jnp.asarray(reward_mask))
    changed = batch.replace(target_values=batch.target_values.at[2, 3:].add(5.0),
                            target_rewards=batch.target_rewards.at[2, 2:].add(1.0))
    (loss, _), grads = _loss_and_grad(graphdef, params, batch, LossConfig())
    (loss_c, _), grads_c = _loss_and_grad(graphdef, params, changed, LossConfig())
    np.testing.assert_array_equal(loss, loss_c)
    for g, g_c in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_c), strict=True):
        np.testing.assert_array_equal(g, g_c)
    known = batch.replace(target_values=batch.target_values.at[2, 2].add(5.0))
    assert _loss_and_grad(graphdef, params, known, LossConfig())[0][0] != loss


def test_adam_on_a_fixed_batch_reduces_the_loss(model):
    graphdef, params = model
    batch, loss_cfg = _batch(seed=2), LossConfig()
    optimizer = optax.adam(3e-3)

    @functools.partial(jax.jit, compiler_options=_FAST_COMPILE)
    def update(params, grads, opt_state):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    opt_state = jax.jit(optimizer.init)(params)
    losses = []
    for _ in range(30):
        (loss, _), grads = _loss_and_grad(graphdef, params, batch, loss_cfg)
        losses.append(float(loss))
        params, opt_state = update(params, grads, opt_state)
    assert losses[-1] < losses[0] - 0.25 * abs(losses[0]), losses


def test_image_model_with_plain_rewards_gives_a_float32_loss():
    cfg = dataclasses.replace(CFG, value_prefix=False, action_embedding=True)
    graphdef, params = make_model(cfg, IMAGE_SHAPE, NUM_ACTIONS, seed=0)
    loss_fn = jax.jit(compute_loss, static_argnums=(0, 3), compiler_options=_FAST_COMPILE)
    loss, (metrics, priorities) = loss_fn(graphdef, params, _batch(IMAGE_SHAPE), LossConfig())
    assert loss.dtype == priorities.dtype == jnp.float32
    assert np.isfinite(loss) and _finite(metrics)
    assert -1.0 <= metrics["loss/consistency"] <= 1.0


def test_value_prefix_targets_restart_at_each_horizon():
    rewards = jnp.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    targets = jax.jit(functools.partial(_value_prefix_targets, horizon=2))(rewards)
    np.testing.assert_allclose(targets, [[1.0, 3.0, 3.0, 7.0, 5.0]])


def test_negative_cosine_is_minus_one_for_aligned_vectors():
    a = jnp.array([[1.0, 2.0, -3.0], [0.5, 0.0, 0.0], [1.0, 0.0, 0.0]])
    b = jnp.array([[2.0, 4.0, -6.0], [-1.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    values = jax.jit(lambda a, b: (_negative_cosine(a, a), _negative_cosine(a, b)))(a, b)
    np.testing.assert_allclose(values[0], -1.0, atol=1e-6)  # minimum: identical inputs
    np.testing.assert_allclose(values[1], [-1.0, 1.0, 0.0], atol=1e-6)
    grad_at_zero = jax.jit(jax.grad(lambda a: _negative_cosine(a, b).sum()))(jnp.zeros_like(a))
    assert _finite(grad_at_zero)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"value_weight": -1.0}, "loss.value_weight"),
        ({"dynamics_grad_scale": 2.0}, "in \\[0, 1\\]"),
    ],
)
def test_loss_config_validation_names_the_fix(overrides, message):
    with pytest.raises(ValueError, match=message):
        LossConfig(**overrides)
