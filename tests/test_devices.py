"""Data parallelism: the update on a 2-device mesh computes what it computes on one device.

The devices are two forced CPU host devices, which XLA must be told of before JAX starts:
the test runs this file as a script in a subprocess with XLA_FLAGS set.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

UPDATES = 3
FORCED_DEVICES = "--xla_force_host_platform_device_count=2"


def _updates_on_one_and_two_devices() -> dict:
    """Runs in the subprocess: the same UPDATES updates (same state, replay and batches)
    without a mesh and on a 2-device mesh; their metrics, and what the compiled programs
    communicate."""
    import jax

    from agent import config as config_lib
    from agent import replay as replay_lib
    from agent import train as train_lib
    from agent.cli import enable_compilation_cache

    assert len(jax.local_devices()) == 2, jax.local_devices()
    enable_compilation_cache()  # the test session's cache (its path is in the environment)
    cfg = config_lib.smoke()
    env, graphdef, optimizer, state, replay = train_lib.build(cfg)
    spec = env.spec
    env.close()
    rng = np.random.default_rng(0)
    num_envs, num_actions = cfg.env.num_envs, spec.num_actions
    for t in range(60):  # random frames, rewards and segment ends
        replay = replay_lib.add(
            replay, frames=rng.integers(0, 256, (num_envs, *spec.frame_shape), np.uint8),
            actions=rng.integers(0, num_actions, num_envs), rewards=rng.choice([-1.0, 0.0, 1.0],
                                                                               num_envs),
            ends=rng.random(num_envs) < 0.1, terminals=np.ones(num_envs, bool),
            starts=np.full(num_envs, t == 0),
            policies=np.full((num_envs, num_actions), 1 / num_actions))
    betas = jax.numpy.full((1,), 0.4)
    result = {}
    for devices in (1, 2):
        mesh = train_lib.make_mesh(dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, devices=devices)))
        update = train_lib.make_update(cfg, graphdef, optimizer, spec, mesh)
        s, r = train_lib.replicate(jax.tree.map(jax.numpy.copy, (state, replay)), mesh)
        compiled = update.lower(s, r, betas).compile()  # compiled once, inspected, run
        metrics = []
        for _ in range(UPDATES):
            s, r, m = compiled(s, r, betas)
            metrics.append({k: float(v[0]) for k, v in m.items()})
        result[devices] = {"metrics": metrics, "all_reduce": "all-reduce" in compiled.as_text(),
                           "priorities": np.asarray(r.priorities).tolist(),
                           "param_devices": len(jax.tree.leaves(s.params)[0].devices())}
    return result


@pytest.mark.skipif(sys.platform != "linux", reason="forced host devices: XLA:CPU on Linux")
def test_two_devices_compute_the_same_updates_as_one():
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {FORCED_DEVICES}")
    done = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    one, two = result["1"], result["2"]
    # Only the order of the batch sums differs (the float tolerance), and the gradients
    # of the split batch are summed across the devices, which one device never does.
    assert two["all_reduce"] and not one["all_reduce"]
    assert (one["param_devices"], two["param_devices"]) == (1, 2)
    assert len(one["metrics"]) == UPDATES
    for step_one, step_two in zip(one["metrics"], two["metrics"], strict=True):
        for key, value in step_one.items():
            assert step_two[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    np.testing.assert_allclose(two["priorities"], one["priorities"], rtol=1e-4, atol=1e-6)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    print(json.dumps(_updates_on_one_and_two_devices()))
