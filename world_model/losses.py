"""EfficientZero training loss: unroll the model K steps along the real actions.

Terms per sample (summed over the unroll, then divided by K, which is EfficientZero's
1/K gradient hook written into the loss, so its SGD learning rate carries over):
value cross-entropy at all K+1 steps, reward / value-prefix cross-entropy at the K
steps (zero targets past a terminal are learnt as absorbing; targets that reach past a
time-limit cut are unknown and masked), policy
cross-entropy and SimSiam consistency only where `mask` says the step is real. For Box
actions the policy term is the search's weights times the log-density of its arms.
"""

import dataclasses

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from world_model import gaussian
from world_model.networks import _initial_step, _recurrent_step
from world_model.transforms import to_categorical


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Loss weights; the defaults are EfficientZero's."""

    reward_weight: float = 1.0
    """Weight of the reward (or value-prefix) cross-entropy."""
    value_weight: float = 0.25
    """Weight of the value cross-entropy."""
    policy_weight: float = 1.0
    """Weight of the policy cross-entropy against the search policy."""
    consistency_weight: float = 2.0
    """Weight of the SimSiam consistency (negative cosine) loss."""
    dynamics_grad_scale: float = 0.5
    """Factor on the gradient that flows back through each dynamics step."""
    entropy_weight: float = 0.0
    """Weight of a bonus on the policy's entropy at the real steps of the unroll
    (EfficientZero-V2's, for Box actions): keeps the policy exploring where costs on the
    actions pull it to stand still before it has found the reward."""

    def __post_init__(self):
        for name in ("reward_weight", "value_weight", "policy_weight", "consistency_weight",
                     "entropy_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss.{name} must be >= 0")
        if not 0.0 <= self.dynamics_grad_scale <= 1.0:
            raise ValueError("loss.dynamics_grad_scale must be in [0, 1]")


@chex.dataclass(frozen=True)
class Batch:
    """One training batch of B windows of K unrolled steps."""

    observations: chex.Array  # [B, K+1, *obs_shape] obs at t..t+K (roots and consistency targets)
    actions: chex.Array  # [B, K] int32 real actions a_t..a_{t+K-1}; Box: [B, K, D] float32
    target_rewards: chex.Array  # [B, K] float32 clipped rewards r_{t+1}..r_{t+K} (0 past the end)
    target_values: chex.Array  # [B, K+1] float32 value targets (0 past the end)
    target_policies: chex.Array  # [B, K+1, A] float32 search policies (uniform where masked)
    mask: chex.Array  # [B, K+1] float32, 1 where obs t+k exists in the same segment
    # [B, K+1] / [B, K] float32: 0 where the target is unknown because the episode was cut
    # (a time limit, not a terminal) before the steps it sums over
    value_mask: chex.Array
    reward_mask: chex.Array
    weights: chex.Array  # [B] float32 importance-sampling weights
    # Box actions only: [B, K+1, S, D] the pre-tanh arms `target_policies` weigh (S arms)
    target_arms: chex.Array | None = None


def compute_loss(
    graphdef: nnx.GraphDef, params: nnx.State, batch: Batch, cfg: LossConfig
) -> tuple[jax.Array, tuple[dict[str, jax.Array], jax.Array]]:
    """-> (scalar loss, (metrics, priorities [B])); differentiate w.r.t. `params`.

    `loss` is the importance-weighted batch mean; the `loss/<term>` metrics are plain
    batch means of each term before its weight.
    """
    model = nnx.merge(graphdef, params)
    mcfg = model.cfg
    num_steps = batch.actions.shape[1]  # K
    if num_steps == 0:
        raise ValueError("batch.actions must hold at least one unroll step (K >= 1)")
    obs = batch.observations  # [B, K+1, *obs_shape]

    root = _initial_step(model, obs[:, 0])

    # A Python loop, not lax.scan (K is small): in a loop body XLA:CPU runs the backward
    # convolutions on a slow path (jax-ml/jax#12868); this made the atari100k gradient
    # step ~1.6x faster on CPU.
    state, steps = root.state, []
    for k in range(num_steps):
        out = _recurrent_step(model, state, batch.actions[:, k],
                              grad_scale=cfg.dynamics_grad_scale)
        state = out.state
        steps.append(out)
    unrolled = jax.tree.map(lambda *xs: jnp.stack(xs, axis=1), *steps)  # fields [B, K, ...]
    value_logits = jnp.concatenate(
        [root.value_logits[:, None], unrolled.value_logits], axis=1
    )  # [B, K+1, V]
    policy_logits = jnp.concatenate(
        [root.policy_logits[:, None], unrolled.policy_logits], axis=1
    )  # [B, K+1, A] (Box: [B, K+1, 2D])
    reward_logits = unrolled.reward_logits  # [B, K, R]

    value_ce = _cross_entropy(
        value_logits, to_categorical(batch.target_values, mcfg.support_size)
    )  # [B, K+1]
    value_ce = (value_ce * batch.value_mask).sum(axis=1)  # [B]
    reward_targets = batch.target_rewards  # [B, K]
    if mcfg.value_prefix:
        reward_targets = _value_prefix_targets(reward_targets, horizon=mcfg.lstm_horizon)
    reward_ce = _cross_entropy(
        reward_logits,
        to_categorical(reward_targets, mcfg.reward_support_size, bin_width=mcfg.reward_bin_width),
    )  # [B, K]
    reward_ce = (reward_ce * batch.reward_mask).sum(axis=1)  # [B]
    if batch.target_arms is None:
        policy_ce = _cross_entropy(policy_logits, batch.target_policies)  # [B, K+1]
        entropy = _entropy(policy_logits)  # [B, K+1]
    else:
        # Sampled MuZero's target: the search's weights over the arms it sampled.
        log_probs = gaussian.log_prob(policy_logits, batch.target_arms)  # [B, K+1, S]
        policy_ce = -jnp.sum(batch.target_policies * log_probs, axis=-1)
        entropy = gaussian.entropy(policy_logits)
    policy_ce = (policy_ce * batch.mask).sum(axis=1)
    consistency = _consistency(model, unrolled.state.latent, obs[:, 1:])  # [B, K]
    consistency = (consistency * batch.mask[:, 1:]).sum(axis=1)

    scale = 1.0 / num_steps
    terms = {
        "value": value_ce * scale,
        "reward": reward_ce * scale,
        "policy": policy_ce * scale,
        "consistency": consistency * scale,
    }  # each [B]
    per_sample = (
        cfg.value_weight * terms["value"]
        + cfg.reward_weight * terms["reward"]
        + cfg.policy_weight * terms["policy"]
        + cfg.consistency_weight * terms["consistency"]
    )  # [B]
    if cfg.entropy_weight:
        per_sample -= cfg.entropy_weight * (entropy * batch.mask).sum(axis=1) * scale
    loss = jnp.mean(batch.weights * per_sample)

    root_value = root.value  # [B]
    # A root whose value target is unknown gets no priority of its own (just the floor).
    root_error = jnp.abs(root_value - batch.target_values[:, 0]) * batch.value_mask[:, 0]
    priorities = jax.lax.stop_gradient(root_error) + 1e-6
    metrics = {f"loss/{name}": term.mean() for name, term in terms.items()}
    metrics |= {
        "loss/total": loss,
        "value/mean": root_value.mean(),
        "value/target_mean": batch.target_values[:, 0].mean(),
        "reward/mean": unrolled.reward.mean(),
        "policy/entropy": entropy[:, 0].mean(),
        # The search's targets at the root: they narrow before the policy does when the
        # search turns noise in its Q-values into preferences.
        "policy/target_entropy": _target_entropy(batch.target_policies[:, 0]).mean(),
        # Spread of the root latents over the batch's observations, mean over latent units:
        # near 0, the representation maps every observation to one latent (collapse; the
        # atari100k-cpu preset on Pong: 0.0038 at 4k env steps, 0.00055 at 6k).
        "latent/state_std": root.state.latent.reshape(obs.shape[0], -1).std(axis=0).mean(),
    }
    return loss, (jax.lax.stop_gradient(metrics), priorities)


def _cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """[..., N] logits and target distributions -> [...]."""
    return -jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), axis=-1)


def _entropy(logits: jax.Array) -> jax.Array:  # [..., A] -> [...]
    log_p = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


def _target_entropy(targets: jax.Array) -> jax.Array:  # [..., A] distributions -> [...]
    return -jnp.sum(jnp.where(targets > 0, targets * jnp.log(jnp.maximum(targets, 1e-12)), 0.0),
                    axis=-1)


def _value_prefix_targets(rewards: jax.Array, *, horizon: int) -> jax.Array:
    """[B, K] rewards -> [B, K] sums since the start of each LSTM horizon (from the root)."""
    totals = jnp.cumsum(rewards, axis=1)  # [B, K]
    totals = jnp.pad(totals, ((0, 0), (1, 0)))  # [B, K+1], totals[:, j] = sum of first j
    steps = jnp.arange(rewards.shape[1])  # [K]
    window_start = (steps // horizon) * horizon  # [K]
    return totals[:, steps + 1] - totals[:, window_start]


def _negative_cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    """[..., N] x [..., N] -> [...] in [-1, 1]; -1 when a and b point the same way."""
    return -jnp.sum(_unit(a) * _unit(b), axis=-1)


def _unit(x: jax.Array) -> jax.Array:
    """x / |x| along the last axis; rsqrt of a clamped square keeps x = 0's gradient finite."""
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-16))


def _consistency(model, latents: jax.Array, next_obs: jax.Array) -> jax.Array:
    """Unrolled latents [B, K, *latent], next_obs [B, K, *obs_shape] -> [B, K] neg. cosines."""
    batch, num_steps = next_obs.shape[:2]
    flat_latents = latents.reshape(batch * num_steps, *latents.shape[2:])  # [B*K, *latent]
    predicted = model.project(flat_latents, predict=True)  # [B*K, proj_out]
    flat_obs = next_obs.reshape(batch * num_steps, *next_obs.shape[2:])  # [B*K, *obs_shape]
    target = jax.lax.stop_gradient(model.project(model.represent(flat_obs), predict=False))
    return _negative_cosine(predicted, target).reshape(batch, num_steps)
