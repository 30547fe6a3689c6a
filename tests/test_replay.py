import jax
import jax.numpy as jnp
import numpy as np

from agent import replay as replay_lib

_add = jax.jit(replay_lib.add)
_sample = jax.jit(replay_lib.sample, static_argnames=("batch_size", "lookahead", "alpha"))
_gather = jax.jit(replay_lib.gather_stacks, static_argnames="stack")


def _filled(num_envs=2, capacity=20, steps=7, ends_at=(), frame_shape=(2, 2, 1)):
    """Replay where frame t of env n is filled with 10*n + t; segments end after `ends_at`."""
    replay = replay_lib.init(
        num_envs=num_envs,
        capacity=capacity,
        frame_shape=frame_shape,
        frame_dtype=jnp.uint8,
        num_actions=3,
    )
    starts = np.ones(num_envs, bool)
    for t in range(steps):
        ends = np.full(num_envs, t in ends_at)
        frames = np.stack([np.full(frame_shape, 10 * n + t, np.uint8) for n in range(num_envs)])
        replay = _add(
            replay,
            frames=frames,
            actions=np.full(num_envs, t % 3),
            rewards=np.full(num_envs, t),
            ends=ends,
            terminals=ends,
            starts=starts,
            policies=np.full((num_envs, 3), 1 / 3),
        )
        starts = ends
    return replay


def _stack_ids(replay, row, time, stack=3):
    stacks = _gather(replay, jnp.array([row]), jnp.array([time]), stack=stack)
    return np.asarray(stacks[0, :, 0, 0, 0]).tolist()


def test_stacks_repeat_the_first_frame_of_a_segment():
    replay = _filled(ends_at=(2,))  # segment 0..2, then 3..6
    assert _stack_ids(replay, 0, 1) == [0, 0, 1]
    assert _stack_ids(replay, 0, 2) == [0, 1, 2]
    assert _stack_ids(replay, 0, 3) == [3, 3, 3]  # never reaches back across the end
    assert _stack_ids(replay, 1, 5) == [13, 14, 15]


def test_ring_overwrites_oldest_and_clamps_stacks_to_what_it_holds():
    replay = _filled(num_envs=1, capacity=5, steps=8)  # holds t = 3..7
    times = np.asarray(replay_lib.column_times(replay))
    assert sorted(times.tolist()) == [3, 4, 5, 6, 7]
    assert _stack_ids(replay, 0, 7) == [5, 6, 7]
    assert _stack_ids(replay, 0, 3) == [3, 3, 3]
    assert int(replay_lib.num_steps(replay)) == 5


def test_sample_only_roots_with_lookahead_written():
    replay = _filled(num_envs=2, capacity=40, steps=12)
    sample = _sample(replay, jax.random.key(0), batch_size=256, lookahead=4, alpha=0.6, beta=0.4)
    times = np.asarray(sample.times)
    assert times.min() >= 0 and times.max() <= 12 - 1 - 4
    assert set(np.asarray(sample.rows).tolist()) == {0, 1}
    assert float(sample.weights.max()) == 1.0


def test_sample_never_draws_a_step_without_probability():
    # A mostly empty ring (a run's first updates) with uneven priorities. An inverse-CDF
    # draw over XLA's parallel cumsum, which can rise across zero-probability entries,
    # rarely picked unwritten steps, whose importance weight 1 / p is infinite.
    replay = _filled(num_envs=4, capacity=40_000, steps=60)
    rng = np.random.default_rng(0)
    priorities = replay.priorities.at[:, :60].set(rng.random((4, 60)).astype(np.float32) ** 4)
    replay = replay.replace(priorities=priorities)
    for seed in range(20):
        sample = _sample(replay, jax.random.key(seed), batch_size=4096, lookahead=5,
                         alpha=0.6, beta=1.0)
        assert np.asarray(sample.times).max() <= 60 - 1 - 5
        assert np.isfinite(np.asarray(sample.weights)).all()


def test_priorities_steer_sampling_and_new_steps_get_the_max():
    replay = _filled(num_envs=1, capacity=10, steps=10)
    hot = replay_lib.Sample(rows=jnp.array([0]), times=jnp.array([2]), weights=jnp.ones(1))
    table, max_priority = replay_lib.set_priorities(replay.priorities, replay.max_priority,
                                                    hot, jnp.array([1000.0]))
    replay = replay.replace(priorities=table, max_priority=max_priority)
    # 2000 draws: about 12 of them land on the six cold steps.
    sample = _sample(replay, jax.random.key(1), batch_size=2000, lookahead=3, alpha=1.0, beta=1.0)
    assert np.mean(np.asarray(sample.times) == 2) > 0.9
    # The rare draws carry the larger importance weights.
    assert float(sample.weights[np.asarray(sample.times) != 2].min()) > 0.99
    assert float(replay.max_priority) == 1000.0


def test_close_segments_ends_the_open_segment():
    replay = replay_lib.close_segments(_filled(num_envs=2, capacity=20, steps=5))
    assert np.asarray(replay.ends[:, 4]).all() and not np.asarray(replay.ends[:, :4]).any()


def test_acting_stacks_equal_replay_stacks():
    """The model must see the same stack when acting and when learning from that step."""
    rng = np.random.default_rng(0)
    num_envs, stack, steps = 3, 4, 30
    replay = replay_lib.init(
        num_envs=num_envs, capacity=90, frame_shape=(2, 2, 3), frame_dtype=jnp.uint8, num_actions=2
    )
    frames = rng.integers(0, 255, (num_envs, 2, 2, 3), dtype=np.uint8)
    acting = replay_lib.FrameStack(frames, stack)
    starts = np.ones(num_envs, bool)
    seen = []
    for _ in range(steps):
        seen.append(acting.frames.copy())
        ends = rng.random(num_envs) < 0.2
        replay = _add(
            replay,
            frames=acting.frames[:, -1],
            actions=np.zeros(num_envs),
            rewards=np.zeros(num_envs),
            ends=ends,
            terminals=ends,
            starts=starts,
            policies=np.full((num_envs, 2), 0.5),
        )
        starts = ends
        acting.push(rng.integers(0, 255, (num_envs, 2, 2, 3), dtype=np.uint8), starts)
    rows = jnp.repeat(jnp.arange(num_envs), steps)
    times = jnp.tile(jnp.arange(steps), num_envs)
    stacks = np.asarray(_gather(replay, rows, times, stack=stack))
    expected = np.stack(seen, axis=1).reshape(num_envs * steps, stack, 2, 2, 3)
    np.testing.assert_array_equal(stacks, expected)


def test_merge_stack_puts_frames_on_channels_oldest_first():
    stacks = np.arange(2 * 3 * 4 * 4 * 2).reshape(2, 3, 4, 4, 2)  # [B, stack, H, W, C]
    obs = replay_lib.merge_stack(stacks, is_image=True)
    assert obs.shape == (2, 4, 4, 6)
    np.testing.assert_array_equal(obs[..., 0:2], stacks[:, 0])
    np.testing.assert_array_equal(obs[..., 4:6], stacks[:, 2])
    vectors = replay_lib.merge_stack(np.arange(12).reshape(2, 3, 2), is_image=False)
    assert vectors.shape == (2, 6) and vectors[1].tolist() == [6, 7, 8, 9, 10, 11]
