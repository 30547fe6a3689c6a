"""End-to-end training: resume after SIGKILL, evaluation output, compiles, NaN guard."""

import collections
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from agent import config as config_lib
from agent.checkpoint import saved_counters, saved_steps
from agent.envs import make_env
from agent.train import train, updates_due

ENV_STEPS, LOG_INTERVAL = 600, 100


def _train_command(logdir: Path) -> list[str]:
    return [sys.executable, "-m", "agent.cli", "train", "--preset", "smoke",
            "--env-steps", str(ENV_STEPS), "--logdir", str(logdir),
            "--log.log-interval", str(LOG_INTERVAL), "--log.checkpoint-interval", "10",
            "--log.progress", "False"]


def test_killed_run_resumes_exactly(tmp_path):
    logdir = tmp_path / "run"
    first = subprocess.Popen(_train_command(logdir), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while not any(s >= ENV_STEPS // 2 for s in saved_steps(logdir)):
        assert first.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint past half-way in time"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed_at = saved_counters(logdir)["env_steps"]
    assert killed_at < ENV_STEPS and not (logdir / "eval.json").exists()

    second = subprocess.run(_train_command(logdir), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resuming {logdir} at {killed_at} env steps" in second.stdout

    counters = saved_counters(logdir)
    cfg = config_lib.smoke()
    assert counters["env_steps"] == ENV_STEPS
    assert counters["replay_written"] == ENV_STEPS  # nothing stored twice, nothing lost
    run_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, env_steps=ENV_STEPS))
    assert counters["updates"] == run_cfg.total_updates
    logged = [json.loads(line)["env_steps"]
              for line in (logdir / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(LOG_INTERVAL, ENV_STEPS + 1, LOG_INTERVAL))
    result = json.loads((logdir / "eval.json").read_text())
    assert result["env_steps"] == ENV_STEPS and len(result["returns"]) == cfg.log.eval_episodes

    # Another config in the same directory is refused, naming what differs.
    refused = subprocess.run([*_train_command(logdir), "--train.batch-size", "8"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "train.batch_size: 16 -> 8" in refused.stderr

    # `dreamzero evaluate` on the finished run rewrites eval.json from the checkpoint.
    evaluated = subprocess.run([sys.executable, "-m", "agent.cli", "evaluate", str(logdir),
                                "--episodes", "3", "--video"],
                               capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    result = json.loads((logdir / "eval.json").read_text())
    assert len(result["returns"]) == 3 and np.isfinite(result["mean_return"])
    assert (logdir / "eval.gif").stat().st_size > 0


def test_interrupted_run_says_how_to_resume(tmp_path):
    logdir = tmp_path / "run"
    run = subprocess.Popen(_train_command(logdir), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not saved_steps(logdir):
        assert run.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.2)
    run.send_signal(signal.SIGINT)
    stderr = run.communicate(timeout=120)[1]
    assert run.returncode == 130, stderr[-2000:]
    assert f"interrupted; rerun the same command to resume {logdir}" in stderr
    assert "Traceback" not in stderr
    assert saved_counters(logdir)["env_steps"] < ENV_STEPS


def test_training_loop_compiles_each_step_once(tmp_path, caplog):
    # The smoke run crosses both temperature changes, a periodic and the final evaluation.
    cfg = dataclasses.replace(config_lib.smoke(), logdir=str(tmp_path),
                              log=dataclasses.replace(config_lib.smoke().log, progress=False))
    assert len(set(cfg.train.temperatures)) > 1
    # `add` is one module-level function: a smoke run earlier in this process (another
    # test in the same worker) would have compiled it already.
    jax.clear_caches()
    with caplog.at_level(logging.WARNING, logger="jax"), jax.log_compiles():
        train(cfg)
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Compiling ")]
    # Eager jnp ops compile under their own names too ("add"): the replay's programs are
    # the ones that take its frame buffer.
    with make_env(cfg.env.name, num_envs=1, seed=0, mode="train", **cfg.env.keywords()) as env:
        frame_shape = ",".join(map(str, env.spec.frame_shape))
    frames = f"uint8[{cfg.env.num_envs},{cfg.replay.capacity // cfg.env.num_envs},{frame_shape}]"
    compiled = collections.Counter(m.split()[1] for m in messages if frames in m)
    compiled["jit(act)"] = sum(m.split()[1] == "jit(act)" for m in messages)
    # `act` twice: the acting search and the greedy evaluation search.
    assert (compiled["jit(update)"], compiled["jit(add)"], compiled["jit(act)"]) == (1, 1, 2), \
        compiled


def test_updates_are_spread_to_reach_the_replay_ratio():
    cfg = config_lib.smoke()
    assert updates_due(cfg, cfg.train.start_steps - 1) == 0
    assert updates_due(cfg, cfg.train.env_steps) == cfg.total_updates
    due = [updates_due(cfg, s) for s in range(0, cfg.train.env_steps + 1, 2)]
    assert due == sorted(due)


@pytest.mark.parametrize("name", ["pong"])
def test_atari_eval_reports_human_normalised_score(tmp_path, name):
    from agent.evaluate import write_eval

    result = write_eval(tmp_path, name, 100, [-21.0, -19.0])
    assert result["hns"] == pytest.approx((-20.0 + 20.7) / (14.6 + 20.7))
    assert "hns" not in write_eval(tmp_path, "catch", 100, [1.0])
