"""Asynchronous checkpoints: what is saved is the state at the call, whatever comes after,
and the save holds no reference to the caller's buffers, so the training step can still
donate them (a held buffer is not donated but copied, each update, for the whole write)."""

import jax
import jax.numpy as jnp
import numpy as np

from agent.checkpoint import Checkpointer
from agent.train import TrainState


def test_save_keeps_the_values_of_the_call_while_training_donates_the_buffers(tmp_path):
    params = {"w": jnp.arange(1_000_000, dtype=jnp.float32)}
    state = TrainState(params=params, target_params=jax.tree.map(jnp.copy, params),
                       opt_state=(), rng=jnp.zeros(2, jnp.uint32))
    replay = {"frames": jnp.ones((64, 128, 128), jnp.uint8)}
    expected = jax.tree.map(np.array, (state, replay))  # copies, not views of the buffers
    checkpointer = Checkpointer(tmp_path)
    checkpointer.save(10, state=state, replay=replay, counters={"env_steps": 10})
    # What the training step does next: donate both and write into their buffers.
    step = jax.jit(lambda tree: jax.tree.map(lambda x: x * 0 + 7, tree), donate_argnums=0)
    frames = replay["frames"]
    state, replay = step((state, replay))
    jax.block_until_ready((state, replay))
    assert frames.is_deleted()  # donated, not copied
    assert checkpointer.latest_step() == 10  # waits for the background write
    restored_state, restored_replay, counters = checkpointer.restore(state=state, replay=replay)
    checkpointer.close()
    np.testing.assert_array_equal(restored_state.params["w"], expected[0].params["w"])
    np.testing.assert_array_equal(restored_replay["frames"], expected[1]["frames"])
    assert counters == {"env_steps": 10}

    reader = Checkpointer(tmp_path, read_only=True)
    params, _ = reader.restore_params(state.params)
    reader.close()
    np.testing.assert_array_equal(params["w"], expected[0].params["w"])
