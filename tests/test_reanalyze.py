import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_params import perturbed

import search
from agent import config as config_lib
from agent import replay as replay_lib
from agent.acting import plan_kwargs
from agent.reanalyze import make_batch, nstep_values, td_horizon
from world_model import initial_inference, make_model


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
    horizon = td_horizon(jnp.array([age]), td_steps=5, env_steps=100_000, correct=True)
    assert int(horizon[0]) == expected
    assert (
        int(td_horizon(jnp.array([age]), td_steps=5, env_steps=100_000, correct=False)[0]) == 5
    )


UNROLL, TD, STACK, NUM_ENVS, STEPS = 5, 5, 2, 2, 40


@dataclasses.dataclass(frozen=True)
class _Window:
    """make_batch's inputs and output on a small replay, for checking it by hand."""

    cfg: config_lib.Config
    graphdef: object
    params: object
    rewards: np.ndarray  # [STEPS, NUM_ENVS]
    rows: jax.Array  # [4]
    times: jax.Array  # [4]
    recurrent_fn: object
    rng: jax.Array
    batch: object
    observation: object  # (row, time) -> [10, 10, STACK], the stacked observation there


def _window_setup(value_target: str, *, value_prefix: bool = True,
                  search_kind: str = "gumbel", end_after: int | None = None,
                  terminal: bool = True) -> _Window:
    """A smoke model, a replay of STEPS random steps per env and a sample of 4 windows.
    `end_after`: env 0's first segment ends after that step, as a terminal or a cut."""
    cfg = config_lib.preset("smoke")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, value_prefix=value_prefix),
                              search=dataclasses.replace(cfg.search, kind=search_kind),
                              train=dataclasses.replace(
        cfg.train, reanalyze_fraction=1.0, discount=0.9, value_target=value_target,
        env_steps=100))  # the TD horizon shrinks by one every 30 transitions of age
    stack, num_envs, steps = STACK, NUM_ENVS, STEPS
    graphdef, params = make_model(cfg.model, (10, 10, stack), 3, seed=0)
    params = perturbed(params, scale=0.3)  # else every value is 0: nothing would be pinned
    replay = replay_lib.init(num_envs=num_envs, capacity=200, frame_shape=(10, 10, 1),
                             frame_dtype=jnp.uint8, num_actions=3)
    frames = np.random.default_rng(0).integers(0, 256, (steps, num_envs, 10, 10, 1), np.uint8)
    rewards = np.arange(steps * num_envs, dtype=np.float32).reshape(steps, num_envs) % 3 - 1
    for t in range(steps):  # one segment per env unless `end_after`
        ends = np.array([t == end_after] + [False] * (num_envs - 1))
        starts = np.array([t == 0 or t - 1 == end_after] + [t == 0] * (num_envs - 1))
        replay = replay_lib.add(replay, frames=frames[t], actions=np.full(num_envs, t % 3),
                                rewards=rewards[t], ends=ends,
                                terminals=np.full(num_envs, terminal), starts=starts,
                                policies=np.full((num_envs, 3), 1 / 3))
    rows, times = jnp.array([0, 1, 1, 0]), jnp.array([0, 3, 20, 29])
    sample = replay_lib.Sample(rows=rows, times=times, weights=jnp.ones(4))
    recurrent_fn = search.model_recurrent_fn(graphdef, discount=0.9)
    rng = jax.random.key(7)
    batch = jax.jit(functools.partial(make_batch, cfg, graphdef, stack=stack, is_image=True,
                                      clip_rewards=False, recurrent_fn=recurrent_fn))(
        params, replay, sample, rng)

    def observation(row, time):  # [stack, 10, 10, 1] -> [10, 10, stack]
        stacked = replay_lib.gather_stacks(replay, jnp.array([row]), jnp.array([time]),
                                           stack=stack)
        return replay_lib.merge_stack(stacked, is_image=True)[0]

    return _Window(cfg, graphdef, params, rewards, rows, times, recurrent_fn, rng, batch,
                   observation)


# The direct computations below run jitted: eagerly, every call would compile mctx's loops
# and each model op anew.
_inference = jax.jit(initial_inference, static_argnums=0)


def _search(w: _Window, roots: jax.Array):
    """The reanalysis search on roots [N, 10, 10, STACK], with make_batch's search rng."""
    kwargs = plan_kwargs(w.cfg.search, greedy=False)

    def run(params, rng, roots):
        return search.plan(params, rng, search.model_root(w.graphdef, params, roots),
                           w.recurrent_fn, **kwargs)

    return jax.jit(run)(w.params, jax.random.split(w.rng)[0], roots)


def test_make_batch_targets_match_a_direct_computation_per_sample():
    """Pins make_batch (one representation pass for roots and bootstraps) to the
    definitions: n-step returns over the real rewards plus the target network's value of
    the stacked observation `horizon` steps ahead, and the search's policy at each root."""
    w = _window_setup("nstep")
    cfg, graphdef, params, rewards, rows, times = (w.cfg, w.graphdef, w.params, w.rewards,
                                                   w.rows, w.times)
    observation, batch = w.observation, w.batch
    unroll, td, steps, num_envs = UNROLL, TD, STEPS, NUM_ENVS
    ages = (steps - 1 - times) * num_envs
    horizons = td_horizon(ages, td_steps=td, env_steps=cfg.train.env_steps, correct=True)
    assert sorted(set(np.asarray(horizons).tolist())) == [3, 4, 5]  # old data: shorter
    roots, expected = [], np.zeros((4, unroll + 1))
    columns = zip(rows.tolist(), times.tolist(), horizons.tolist(), strict=True)
    for b, (row, time, h) in enumerate(columns):
        for k in range(unroll + 1):
            roots.append(observation(row, time + k))
            ahead = _inference(graphdef, params, observation(row, time + k + h)[None])
            expected[b, k] = sum(0.9**i * rewards[time + k + i, row] for i in range(h))
            expected[b, k] += 0.9**h * float(ahead.value[0])
    roots = jnp.stack(roots)
    np.testing.assert_array_equal(np.asarray(batch.observations).reshape(roots.shape), roots)
    np.testing.assert_allclose(np.asarray(batch.target_values), expected, rtol=1e-5, atol=1e-5)

    policy = _search(w, roots).action_weights
    np.testing.assert_allclose(np.asarray(batch.target_policies).reshape(policy.shape),
                               np.asarray(policy), atol=1e-5)


@pytest.mark.parametrize("value_target", ["search", "greedy"])
def test_search_value_targets_bootstrap_from_the_search(value_target):
    """`value_target="search"`: the bootstrap is the root value of the same reanalysis
    search, run over every step of the window (roots first, then the steps past them);
    `"greedy"`: the Q-value of the action that search would take greedily."""
    w = _window_setup(value_target, search_kind="muzero")
    rows, times = w.rows, w.times
    span = UNROLL + TD + 1
    window = jnp.stack([w.observation(row, time + j) for row, time in
                        zip(rows.tolist(), times.tolist(), strict=True) for j in range(span)])
    plan = _search(w, window)
    values = np.asarray(plan.root_value if value_target == "search" else plan.greedy_value)
    values = values.reshape(4, span)
    assert not np.allclose(plan.root_value, plan.greedy_value)
    assert np.ptp(values) > 0.1  # the perturbed model values the steps differently
    ages = (STEPS - 1 - times) * NUM_ENVS
    horizons = td_horizon(ages, td_steps=TD, env_steps=w.cfg.train.env_steps, correct=True)
    expected = np.zeros((4, UNROLL + 1))
    for b, (row, time, h) in enumerate(zip(rows.tolist(), times.tolist(), horizons.tolist(),
                                           strict=True)):
        for k in range(UNROLL + 1):
            expected[b, k] = sum(0.9**i * w.rewards[time + k + i, row] for i in range(h))
            expected[b, k] += 0.9**h * values[b, k + h]
    np.testing.assert_allclose(np.asarray(w.batch.target_values), expected, rtol=1e-5, atol=1e-5)
    policies = np.asarray(plan.action_weights).reshape(4, span, -1)[:, : UNROLL + 1]
    np.testing.assert_allclose(np.asarray(w.batch.target_policies), policies, atol=1e-5)


@pytest.mark.parametrize("terminal", [True, False])
def test_targets_reaching_past_a_cut_are_masked_not_past_a_terminal(terminal):
    """Sample 0's window (env 0 from step 0) holds a segment end after step 3. Past a
    terminal the targets are the absorbing state's zeros, all learnt; past a cut (a time
    limit) the episode went on unrecorded, so a value target whose n steps reach past it,
    and every reward after it, is masked."""
    w = _window_setup("nstep", end_after=3, terminal=terminal)
    ages = (STEPS - 1 - w.times) * NUM_ENVS
    h = int(td_horizon(ages, td_steps=TD, env_steps=w.cfg.train.env_steps, correct=True)[0])
    value_mask = np.asarray(w.batch.value_mask[0])
    reward_mask = np.asarray(w.batch.reward_mask[0])
    if terminal:
        assert value_mask.all() and reward_mask.all()
    else:
        np.testing.assert_array_equal(value_mask, [k + h <= 3 for k in range(UNROLL + 1)])
        np.testing.assert_array_equal(reward_mask, [k <= 3 for k in range(UNROLL)])
    assert np.asarray(w.batch.value_mask[1:]).all() and np.asarray(w.batch.reward_mask[1:]).all()


def test_make_batch_takes_a_model_without_value_prefix():
    """Per-step rewards leave the model state a zero-size LSTM carry, which a reshape to
    (-1, 0) cannot size: make_batch once failed at the first update of such a run."""
    w = _window_setup("search", value_prefix=False)
    assert w.batch.target_values.shape == (4, UNROLL + 1)
    assert np.isfinite(np.asarray(w.batch.target_values)).all()
