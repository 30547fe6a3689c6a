"""The benchmark scripts in scripts/ run end to end at toy size (their figures are not checked:
only that each runs and prints its table). scripts/atari100k.py, faults.py and ladder.py are
run by tests/test_sweep.py, test_faults.py and test_ladder.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, env: dict | None = None) -> str:
    # Most of a benchmark's time here is compiling: keep its programs in the tests' on-disk
    # cache (tests/conftest.py), so that a rerun takes seconds.
    cache = os.environ.get("DREAMZERO_COMPILATION_CACHE")
    env = os.environ | ({"JAX_COMPILATION_CACHE_DIR": cache} if cache else {}) | (env or {})
    done = subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_bench_search():
    out = run(sys.executable, "scripts/bench_search.py", "--sizes", "smoke", "--batches", "1",
              "--repeats", "1")
    assert "| smoke | gumbel | 16 | 1 |" in out and "| smoke | muzero | 50 | 1 |" in out


def test_count_flops():
    out = run(sys.executable, "scripts/count_flops.py", "--preset", "smoke", "--tflops", "100")
    assert "preset smoke, env catch" in out
    assert "| **total** |" in out and "at 100 TFLOP/s sustained" in out


def test_bench_train(tmp_path):
    # It acts through training's acting step (agent.acting.Actor), so it runs every env the
    # trainer runs (`--env Pendulum-v1` too: Box actions compile minutes here, so not in the
    # suite). Train flags after `--` shrink the programs it compiles.
    out = run(sys.executable, "scripts/bench_train.py", "--preset", "smoke", "--env-steps", "32",
              "--updates", "1", "--json", str(tmp_path / "bench.json"), "--",
              "--train.unroll-steps", "1", "--train.td-steps", "1",
              "--search.num-simulations", "2", "--search.max-num-considered-actions", "2")
    assert "preset smoke, env catch" in out
    assert (tmp_path / "bench.json").is_file()


def test_probe_world_model():
    # Centred frames on catch, so that the frame mean is measured as training measures it.
    out = run(sys.executable, "scripts/probe_world_model.py", "--preset", "smoke",
              "--updates", "4", "--play-steps", "200", "--eval-every", "2", "--",
              "--train.unroll-steps", "2", "--model.center-frames", "True")
    lines = out.splitlines()
    assert lines[0].startswith("catch: 200 x 8 random-play steps")
    records = [json.loads(line) for line in lines[1:]]
    assert [r["updates"] for r in records] == [0, 2, 4]
    assert {"reward_corr", "value_corr", "latent_std", "loss/reward"} <= set(records[-1])


def test_gpu_check_dry_path(tmp_path):
    """BENCH=0 and no training seconds: only the set-up (packages, device, versions). The
    benchmarks it would run are scripts/bench_train.py's, tested above; the full path with
    PRESET=smoke takes minutes on a CPU."""
    results = tmp_path / "results"
    run("bash", "scripts/gpu_check.sh", "catch", "0",
        env={"BENCH": "0", "PYTHON": sys.executable, "RESULTS_DIR": str(results)})
    assert "jax" in (results / "device.txt").read_text()
