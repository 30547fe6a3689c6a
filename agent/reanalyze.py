"""Reanalysis: fresh learning targets for a replay sample, computed with the current
target network (EfficientZero).

- policy targets: one batched search over every root of the unroll (B x (K+1) roots);
  a `1 - reanalyze_fraction` share of samples keeps the policy stored when acting (for
  Box actions, a policy is weights over sampled arms, which travel with it);
- value targets: n-step returns bootstrapped from the target network's value of the
  observation n steps ahead (or, as options, from the search's value there, MuZero
  Reanalyse, or from the Q-value of its greedy action), with the horizon shortened for old data
  (off-policy correction);
- reward targets: the real rewards, clipped; past a terminal all targets are the
  absorbing state's zeros and the step is masked for policy and consistency. Past a cut
  (a time limit, or the run stopped) the episode went on unrecorded: value and reward
  targets that reach past it are masked too (Pardo et al., 2018, "Time limits in RL").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import search
from agent import replay as replay_lib
from agent.acting import plan_kwargs, search_roots
from agent.config import Config
from world_model import Batch, initial_inference


def td_horizon(age, *, td_steps: int, env_steps: int, correct: bool):
    """EfficientZero's off-policy correction: one step shorter per 0.3 * env_steps
    transitions of age, at least 1. age: transitions (all envs) since the root step.

    EfficientZero states the period as 0.3 x its training steps, which equal its env
    steps; age counts transitions, so the period scales with the env steps. (Scaled by
    the updates instead, a run with a replay ratio of 0.25 would cut most of its replay
    to one-step TD targets.)"""
    if not correct:
        return jnp.full_like(age, td_steps)
    per_step = max(1, int(0.3 * env_steps))
    return jnp.clip(td_steps - age // per_step, 1, td_steps)


def nstep_values(rewards, alive, bootstrap, horizon, *, unroll: int, td_steps: int,
                 discount: float):
    """Bootstrapped n-step returns for every unroll position.

    rewards [B, K+td] (clipped), alive [B, K+td+1] (1 while no segment end came before
    step j), bootstrap [B, K+1] values of the observation `horizon` steps ahead,
    horizon [B] int in [1, td]. Returns [B, K+1].
    """
    i = jnp.arange(td_steps)  # [td]
    k = jnp.arange(unroll + 1)[:, None]  # [K+1, 1]
    in_horizon = i[None, :] < horizon[:, None]  # [B, td]
    terms = rewards[:, k + i] * alive[:, k + i] * discount**i  # [B, K+1, td]
    partial = jnp.sum(terms * in_horizon[:, None, :], axis=-1)  # [B, K+1]
    ahead = jnp.arange(unroll + 1)[None, :] + horizon[:, None]  # [B, K+1]
    alive_ahead = jnp.take_along_axis(alive, ahead, axis=1)
    return partial + discount ** horizon[:, None] * bootstrap * alive_ahead


def _before_first(events: jax.Array) -> jax.Array:
    """[B, T] bool, an event after step j -> [B, T+1] float32, 1 at the steps j that no
    event precedes (step 0 always)."""
    return jnp.cumprod(
        jnp.concatenate([jnp.ones_like(events[:, :1]), ~events], axis=1), axis=1
    ).astype(jnp.float32)


def make_batch(cfg: Config, graphdef, target_params, replay: replay_lib.Replay,
               sample: replay_lib.Sample, rng, *, stack: int, is_image: bool, clip_rewards: bool,
               recurrent_fn) -> Batch:
    """Replay sample -> world_model.Batch with reanalysed targets. Pure; runs under jit.

    `clip_rewards`: `cfg.train.clip_rewards` resolved for the env (TrainConfig.clips_rewards).
    """
    t = cfg.train
    unroll, td = t.unroll_steps, t.td_steps
    rows, times = sample.rows, sample.times  # [B], [B]
    num_actions = replay.policies.shape[-1]  # Box actions: the search's arms
    continuous = replay.arms is not None

    ends = replay_lib.window(replay.ends, rows, times, unroll + td)  # [B, K+td]
    alive = _before_first(ends)  # [B, K+td+1]
    # `known`: 1 until the first cut (an end that is not a terminal) has passed. A target
    # summing over steps past a cut is unknown: the episode went on, unrecorded.
    cuts = ends & ~replay_lib.window(replay.terminals, rows, times, unroll + td)  # [B, K+td]
    known = _before_first(cuts)  # [B, K+td+1]
    rewards = replay_lib.window(replay.rewards, rows, times, unroll + td)  # [B, K+td]
    if clip_rewards:
        rewards = jnp.clip(rewards, -1.0, 1.0)

    age = (replay.written - 1 - times) * replay.num_envs  # [B] transitions
    horizon = td_horizon(age, td_steps=td, env_steps=t.env_steps,
                         correct=t.offpolicy_correction)
    # The search roots (steps 0..K) and the bootstraps (steps k + horizon) all lie in
    # steps 0..K+td: one representation pass over those serves both.
    steps = times[:, None] + jnp.arange(unroll + td + 1)  # [B, K+td+1]
    stacks = replay_lib.gather_stacks(replay, rows[:, None], steps, stack=stack)
    obs = replay_lib.merge_stack(stacks, is_image=is_image)  # [B, K+td+1, *obs_shape]
    batch_size, span = steps.shape
    out = initial_inference(graphdef, target_params, obs.reshape(-1, *obs.shape[2:]))
    out = jax.tree.map(lambda x: x.reshape(batch_size, span, *x.shape[1:]), out)
    # `search` and `greedy` bootstrap from the search, so it runs on every step of the
    # window; otherwise only on the unroll's roots (steps 0..K).
    search_value = t.value_target in ("search", "greedy")
    searched = span if search_value else unroll + 1
    search_rng, choose_rng = jax.random.split(rng)
    root_rng, search_rng = jax.random.split(search_rng) if continuous else (None, search_rng)
    roots = jax.tree.map(lambda x: x[:, :searched].reshape(batch_size * searched, *x.shape[2:]),
                         out)  # explicit size: a zero-size LSTM carry (no value prefix) has no -1
    plan = search.plan(target_params, search_rng,
                       search_roots(cfg.search, root_rng, roots, continuous=continuous),
                       recurrent_fn,
                       **plan_kwargs(cfg.search, greedy=False, continuous=continuous))
    ahead = jnp.arange(unroll + 1)[None, :] + horizon[:, None]  # [B, K+1]
    if search_value:
        searched_value = plan.greedy_value if t.value_target == "greedy" else plan.root_value
        step_values = searched_value.reshape(batch_size, span)
    else:
        step_values = out.value
    # step_values [B, K+td+1]
    bootstrap = jnp.take_along_axis(step_values, ahead, axis=1)
    values = nstep_values(rewards, alive, bootstrap, horizon, unroll=unroll, td_steps=td,
                          discount=t.discount)
    value_mask = jnp.take_along_axis(known, ahead, axis=1)  # [B, K+1]: no cut before k + h

    fresh = plan.action_weights.reshape(batch_size, searched, num_actions)[:, : unroll + 1]
    stored = replay_lib.window(replay.policies, rows, times, unroll + 1)  # [B, K+1, A]
    reanalysed = jax.random.uniform(choose_rng, times.shape) < t.reanalyze_fraction
    policies = jnp.where(reanalysed[:, None, None], fresh, stored)
    mask = alive[:, : unroll + 1]  # [B, K+1]
    policies = jnp.where(mask[..., None] > 0, policies, 1.0 / num_actions)
    arms = None
    if continuous:
        fresh_arms = plan.arms.reshape(batch_size, searched, *plan.arms.shape[1:])
        stored_arms = replay_lib.window(replay.arms, rows, times, unroll + 1)  # [B, K+1, S, D]
        arms = jnp.where(reanalysed[:, None, None, None], fresh_arms[:, : unroll + 1],
                         stored_arms)

    return Batch(
        observations=obs[:, : unroll + 1],
        actions=replay_lib.window(replay.actions, rows, times, unroll),
        target_rewards=rewards[:, :unroll] * alive[:, :unroll],
        target_values=values,
        target_policies=policies,
        mask=mask,
        value_mask=value_mask,
        reward_mask=known[:, :unroll],  # reward k is real, or a terminal's absorbing 0
        weights=sample.weights,
        target_arms=arms,
    )
