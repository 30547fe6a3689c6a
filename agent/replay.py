"""Prioritised replay that stores every frame once and builds stacks by index.

Layout: one row per env, one column per time step, a ring of `length` columns shared by
all rows (the envs step in lockstep, so one write pointer serves them all). Slot (n, t)
holds the frame the agent saw at time t, the action it took, the reward and segment end
that followed, and the search policy and priority of that step. For Box actions
the policy is over the search's sampled arms, which are stored with it.

A *segment* is a run of steps without a training terminal (game over, life loss, time
cap). Observation stacks never reach across a segment start: the first frame is
repeated instead. Acting builds its stacks by the same rule (`FrameStack`), so the
model sees identical inputs when acting and when learning.

Everything here is a pure function of arrays, so the whole buffer lives on the
accelerator and sampling, gathering and priority updates run inside the jitted update.
"""

from __future__ import annotations

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np


@chex.dataclass(frozen=True)
class Replay:
    frames: jax.Array        # [N, L, *frame] uint8 (images) or float32 (vectors)
    actions: jax.Array       # [N, L] int32; Box actions [N, L, D] float32 in [-1, 1]
    rewards: jax.Array       # [N, L] float32 raw reward after the action
    ends: jax.Array          # [N, L] bool, the segment ends after this step
    # [N, L] bool, that end is a terminal (game over; a life loss in train mode). An end
    # that is not cuts the episode short (time limit, run stopped): the return goes on.
    terminals: jax.Array
    segment_start: jax.Array  # [N, L] int32 absolute time of the segment's first step
    policies: jax.Array      # [N, L, A] float32 search policy when acting; Box: over S arms
    priorities: jax.Array    # [N, L] float32
    current_start: jax.Array  # [N] int32 absolute start of each row's open segment
    written: jax.Array       # [] int32 absolute time of the next column to write
    max_priority: jax.Array  # [] float32, given to new steps
    arms: jax.Array | None = None  # Box actions: [N, L, S, D] float32 the policy's arms

    @property
    def length(self) -> int:
        return self.actions.shape[1]

    @property
    def num_envs(self) -> int:
        return self.actions.shape[0]


@chex.dataclass(frozen=True)
class Sample:
    rows: jax.Array     # [B] int32
    times: jax.Array    # [B] int32 absolute time of the root step
    weights: jax.Array  # [B] float32 importance-sampling weights, max 1


def init(*, num_envs: int, capacity: int, frame_shape: tuple[int, ...], frame_dtype,
         num_actions: int, action_dim: int = 0) -> Replay:
    """An empty buffer. num_actions: the width of a stored policy (the Discrete actions, or
    for Box actions of `action_dim` > 0 dimensions the search's arms)."""
    length = capacity // num_envs
    continuous = action_dim > 0
    return Replay(
        frames=jnp.zeros((num_envs, length, *frame_shape), frame_dtype),
        actions=(jnp.zeros((num_envs, length, action_dim), jnp.float32) if continuous
                 else jnp.zeros((num_envs, length), jnp.int32)),
        rewards=jnp.zeros((num_envs, length), jnp.float32),
        ends=jnp.zeros((num_envs, length), bool),
        terminals=jnp.zeros((num_envs, length), bool),
        segment_start=jnp.zeros((num_envs, length), jnp.int32),
        policies=jnp.zeros((num_envs, length, num_actions), jnp.float32),
        priorities=jnp.zeros((num_envs, length), jnp.float32),
        current_start=jnp.zeros((num_envs,), jnp.int32),
        written=jnp.zeros((), jnp.int32),
        max_priority=jnp.ones((), jnp.float32),
        arms=(jnp.zeros((num_envs, length, num_actions, action_dim), jnp.float32)
              if continuous else None),
    )


def check_memory(*, capacity: int, frame_shape: tuple[int, ...], frame_dtype,
                 num_actions: int, action_dim: int = 0) -> int:
    """Bytes the buffer needs; raises MemoryError with the fix if the device lacks them."""
    per_step = (int(np.prod(frame_shape)) * np.dtype(frame_dtype).itemsize
                + 4 * (num_actions * (1 + action_dim) + action_dim + 5) + 1)
    needed = capacity * per_step
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        available = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    else:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    # Leave half for the networks, the batch and the reanalysis search.
    if needed > available // 2:
        raise MemoryError(
            f"replay of {capacity} steps needs {needed / 2**30:.1f} GiB but only "
            f"{available / 2**30:.1f} GiB is free on {device.platform}: lower --replay.capacity"
        )
    return needed


def add(replay: Replay, *, frames, actions, rewards, ends, terminals, starts, policies,
        arms=None) -> Replay:
    """Writes one time step for every env.

    frames [N, *frame], actions [N] (Box: [N, D]), rewards [N], ends [N] bool (segment
    ends after this step), terminals [N] bool (which of those ends are terminals; the
    others are cuts), starts [N] bool (this frame opens a segment), policies [N, A],
    arms [N, S, D] (Box actions only).
    """
    t = replay.written
    column = t % replay.length
    current_start = jnp.where(starts, t, replay.current_start)

    def put(buffer, value):
        return buffer.at[:, column].set(jnp.asarray(value, buffer.dtype))

    return replay.replace(
        frames=put(replay.frames, frames),
        actions=put(replay.actions, actions),
        rewards=put(replay.rewards, rewards),
        ends=put(replay.ends, ends),
        terminals=put(replay.terminals, jnp.logical_and(ends, terminals)),
        segment_start=put(replay.segment_start, current_start),
        policies=put(replay.policies, policies),
        priorities=put(replay.priorities, jnp.full(replay.num_envs, replay.max_priority)),
        current_start=current_start,
        written=t + 1,
        arms=None if arms is None else put(replay.arms, arms),
    )


def close_segments(replay: Replay) -> Replay:
    """Ends every open segment at the last written step (the run stopped mid-episode: a
    cut, not a terminal)."""
    last = (replay.written - 1) % replay.length
    closed = replay.ends.at[:, last].set(True)
    return replay.replace(ends=jnp.where(replay.written > 0, closed, replay.ends))


def column_times(replay: Replay) -> jax.Array:
    """Absolute time stored in each column: the latest t <= written - 1 with t % L == j."""
    j = jnp.arange(replay.length)  # [L]
    return j + replay.length * jnp.floor_divide(replay.written - 1 - j, replay.length)


def num_steps(replay: Replay) -> jax.Array:
    """Steps currently held, all envs together."""
    return jnp.minimum(replay.written, replay.length) * replay.num_envs


def sample(replay: Replay, rng, *, batch_size: int, lookahead: int, alpha: float,
           beta) -> Sample:
    """Prioritised sample of root steps that have `lookahead` written steps after them."""
    times = column_times(replay)  # [L]
    oldest = replay.written - replay.length
    valid = (times >= jnp.maximum(oldest, 0)) & (times <= replay.written - 1 - lookahead)
    scores = jnp.where(valid[None, :], replay.priorities**alpha, 0.0)  # [N, L]
    probs = (scores / jnp.sum(scores)).reshape(-1)
    flat = _draw(rng, probs, batch_size)
    rows, columns = jnp.divmod(flat, replay.length)
    count = jnp.sum(valid) * replay.num_envs
    weights = (count * probs[flat]) ** (-beta)
    return Sample(rows=rows.astype(jnp.int32), times=times[columns].astype(jnp.int32),
                  weights=weights / jnp.max(weights))


def _draw(rng, probs, num: int) -> jax.Array:
    """`num` indices drawn with probabilities `probs` [size]; never one whose probability
    is 0.

    Inverse CDF on a CDF made flat across zero-probability entries: XLA's parallel cumsum
    can rise there by rounding, and plain inverse-CDF sampling (jax.random.choice) then
    drew an unwritten step about once in 10^7 draws, whose weight 1 / p made the loss NaN.
    With the flat CDF the first entry above a draw always has p > 0. O(size + num log size);
    a Gumbel-max draw costs num x size random numbers (most of an update at batch 32)."""
    cdf = jax.lax.cummax(jnp.where(probs > 0, jnp.cumsum(probs), 0.0))  # [size]
    u = jax.random.uniform(rng, (num,)) * cdf[-1]
    # argmax: the first entry at the CDF's top has p > 0 (a draw rounded up to the top).
    return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), jnp.argmax(cdf))


def gather_stacks(replay: Replay, rows, times, *, stack: int) -> jax.Array:
    """Observation stacks at (rows, times): [*idx, stack, *frame], oldest frame first.

    Frames before the segment start (or older than the ring holds) repeat the first one.
    """
    columns = times % replay.length
    start = replay.segment_start[rows, columns]
    floor = jnp.maximum(start, replay.written - replay.length)
    offsets = jnp.arange(stack - 1, -1, -1)  # [stack] e.g. 3, 2, 1, 0
    frame_times = jnp.maximum(times[..., None] - offsets, floor[..., None])
    return replay.frames[rows[..., None], frame_times % replay.length]


def window(buffer: jax.Array, rows, times, size: int) -> jax.Array:
    """buffer[rows, times + i] for i < size: [B, size, ...]."""
    steps = times[:, None] + jnp.arange(size)  # [B, size]
    return buffer[rows[:, None], steps % buffer.shape[1]]


def set_priorities(table, max_priority, sample: Sample, priorities):
    """The priority table [N, L] and its running max with the sample's steps set."""
    columns = sample.times % table.shape[1]
    return (table.at[sample.rows, columns].set(priorities),
            jnp.maximum(max_priority, jnp.max(priorities)))


class FrameStack:
    """Acting-side stacks built by the replay's rule: a segment starts with its first
    frame repeated, then each step drops the oldest frame."""

    def __init__(self, first_frames: np.ndarray, stack: int):
        self.frames = np.repeat(first_frames[:, None], stack, axis=1)  # [N, stack, *frame]

    def push(self, frames: np.ndarray, starts: np.ndarray) -> None:
        rolled = np.concatenate([self.frames[:, 1:], frames[:, None]], axis=1)
        restarted = np.repeat(frames[:, None], self.frames.shape[1], axis=1)
        mask = starts.reshape(-1, *([1] * (self.frames.ndim - 1)))
        self.frames = np.where(mask, restarted, rolled)


def merge_stack(stacks, *, is_image: bool):
    """Stacks to model observations: images [..., stack, H, W, C] -> [..., H, W, stack * C]
    (oldest frame's channels first); vectors [..., stack, F] -> [..., stack * F]. numpy or
    jax arrays."""
    if is_image:
        stacks = stacks.swapaxes(-4, -3).swapaxes(-3, -2)  # [..., H, W, stack, C]
    return stacks.reshape(*stacks.shape[:-2], -1)
