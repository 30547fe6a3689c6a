"""Checkpoints. Asynchronous saves: what is saved is the state at the call, whatever
comes after, and the save holds no reference to the caller's buffers, so the training
step can still donate them (a held buffer is not donated but copied, each update, for
the whole write). The replay's frames: each save writes only those added since the
previous one, and every kept checkpoint restores exactly, across the ring's wrap."""

import io
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from agent import replay as replay_lib
from agent.checkpoint import Checkpointer
from agent.train import TrainState

NUM_ENVS, LENGTH, FRAME = 2, 10, (4, 4)


def _state():
    params = {"w": jnp.arange(1_000_000, dtype=jnp.float32)}
    return TrainState(params=params, target_params=jax.tree.map(jnp.copy, params),
                      opt_state=(), rng=jnp.zeros(2, jnp.uint32))


def _replay(frame_shape=FRAME) -> replay_lib.Replay:
    return replay_lib.init(num_envs=NUM_ENVS, capacity=NUM_ENVS * LENGTH,
                           frame_shape=frame_shape, frame_dtype=jnp.uint8, num_actions=3)


def _play(replay, steps: int) -> replay_lib.Replay:
    """`steps` more steps, each env's frame filled with its absolute time and row."""
    for _ in range(steps):
        t = int(replay.written)
        frames = np.stack([np.full(replay.frames.shape[2:], (t * NUM_ENVS + n) % 256)
                           for n in range(NUM_ENVS)])
        replay = replay_lib.add(
            replay, frames=frames, actions=np.full(NUM_ENVS, t % 3), rewards=np.ones(NUM_ENVS),
            ends=np.zeros(NUM_ENVS, bool), terminals=np.zeros(NUM_ENVS, bool),
            starts=np.full(NUM_ENVS, t == 0),
            policies=np.full((NUM_ENVS, 3), 1 / 3))
    return replay


def _frame_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints" / "frames").iterdir())


def test_save_keeps_the_values_of_the_call_while_training_donates_the_buffers(tmp_path):
    state, replay = _state(), _play(_replay(frame_shape=(128, 128)), 4)
    expected = jax.tree.map(np.array, (state, replay))  # copies, not views of the buffers
    checkpointer = Checkpointer(tmp_path)
    checkpointer.save(10, state=state, replay=replay, counters={"env_steps": 10})
    # What the training step does next: donate both and write into their buffers.
    step = jax.jit(lambda tree: jax.tree.map(lambda x: x * 0 + 7, tree), donate_argnums=0)
    params, priorities = state.params["w"], replay.priorities
    state, replay = step((state, replay))
    jax.block_until_ready((state, replay))
    assert params.is_deleted() and priorities.is_deleted()  # donated, not copied
    assert checkpointer.latest_step() == 10  # waits for the background write
    restored_state, restored_replay, counters = checkpointer.restore(
        state=state, replay=_replay(frame_shape=(128, 128)))
    checkpointer.close()
    jax.tree.map(np.testing.assert_array_equal, (restored_state, restored_replay), expected)
    assert counters == {"env_steps": 10}

    reader = Checkpointer(tmp_path, read_only=True)
    params, _ = reader.restore_params(state.params)
    reader.close()
    np.testing.assert_array_equal(params["w"], expected[0].params["w"])


def test_each_save_writes_only_the_new_frames_and_every_kept_checkpoint_restores(tmp_path):
    state, replay = _state(), _replay()
    checkpointer = Checkpointer(tmp_path, keep=2)
    saved = {}
    # The ring of 10 wraps at the third save.
    for steps in (4, 3, 9, 3):
        replay = _play(replay, steps)
        written = int(replay.written)
        before = set(_frame_files(tmp_path)) if saved else set()
        checkpointer.save(written, state=state, replay=replay, counters={"env_steps": written})
        checkpointer.wait_until_finished()
        [name] = set(_frame_files(tmp_path)) - before
        assert name == f"{written - steps:012d}-{written:012d}.npy.zlib"
        data = zlib.decompress((tmp_path / "checkpoints" / "frames" / name).read_bytes())
        assert np.load(io.BytesIO(data)).shape == (NUM_ENVS, steps, *FRAME)
        saved[written] = jax.tree.map(np.array, replay)
    checkpointer.close()
    # Kept: the checkpoints at 16 (times 6-16) and 19 (9-19); neither lists times 0-4.
    assert _frame_files(tmp_path) == ["000000000004-000000000007.npy.zlib",
                                      "000000000007-000000000016.npy.zlib",
                                      "000000000016-000000000019.npy.zlib"]

    reader = Checkpointer(tmp_path)
    _, restored, counters = reader.restore(state=state, replay=_replay())
    jax.tree.map(np.testing.assert_array_equal, restored, saved[19])
    # A resumed run's next save adds to the files it restored from.
    reader.save(21, state=state, replay=_play(restored, 2), counters={"env_steps": 21})
    reader.close()
    assert _frame_files(tmp_path)[-1] == "000000000019-000000000021.npy.zlib"

    (tmp_path / "checkpoints" / "21").rename(tmp_path / "checkpoints" / "21.aside")
    _, restored, _ = Checkpointer(tmp_path).restore(state=state, replay=_replay())
    jax.tree.map(np.testing.assert_array_equal, restored, saved[19])


def test_a_truncated_frame_file_falls_back_to_the_older_checkpoint(tmp_path, capsys):
    state, replay = _state(), _replay()
    checkpointer = Checkpointer(tmp_path)
    replay = _play(replay, 3)
    checkpointer.save(3, state=state, replay=replay, counters={"env_steps": 3})
    older = jax.tree.map(np.array, replay)
    checkpointer.save(5, state=state, replay=_play(replay, 2), counters={"env_steps": 5})
    checkpointer.close()
    newest = tmp_path / "checkpoints" / "frames" / "000000000003-000000000005.npy.zlib"
    newest.write_bytes(newest.read_bytes()[:-10])

    _, restored, counters = Checkpointer(tmp_path).restore(state=state, replay=_replay())
    assert counters == {"env_steps": 3}
    jax.tree.map(np.testing.assert_array_equal, restored, older)
    error = capsys.readouterr().err
    assert "checkpoints/5 is unreadable (error: Error -5 while decompressing data" in error
