"""Faults: each one leaves a run that resumes, and says so in one line.

Unreadable checkpoints, a failed checkpoint write, SIGTERM, SIGKILL at random moments,
bad data from an env, an exception in an env, and directories that are not usable runs.
"""

import errno
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from faulty_env import BAD_STEP

from agent import config as config_lib
from agent import evaluate
from agent import replay as replay_lib
from agent import train as train_lib
from agent.checkpoint import Checkpointer, saved_counters, saved_steps, write_config
from agent.cli import main, parse_train_args
from agent.envs import make_env
from agent.envs.base import EnvDataError

ROOT = Path(__file__).resolve().parents[1]
FAULTY_ENV = Path(__file__).with_name("faulty_env.py")
ENV_STEPS = 200
# Fewer updates than the preset's (they take most of a smoke run's time), each run checkpointed
# four times. scripts/faults.py runs with the same, so every run shares compiled programs.
FAST = ["--train.replay-ratio", "0.1", "--log.checkpoint-interval", "5"]


def _train_args(logdir: Path) -> list[str]:
    return ["train", "--preset", "smoke", "--env-steps", str(ENV_STEPS), "--logdir",
            str(logdir), "--log.progress", "False", *FAST]


def _assert_finished_exactly(logdir: Path) -> None:
    """Counters at the asked env steps, the replay written once per step, every log line
    once, and the final evaluation."""
    cfg = parse_train_args(_train_args(logdir)[1:])
    counters = saved_counters(logdir)
    assert (counters["env_steps"], counters["replay_written"], counters["updates"]) == (
        ENV_STEPS, ENV_STEPS, cfg.total_updates)
    logged = [json.loads(line)["env_steps"]
              for line in (logdir / "metrics.jsonl").read_text().splitlines()]
    interval = cfg.log.log_interval
    assert logged == list(range(interval, ENV_STEPS + 1, interval))
    assert json.loads((logdir / "eval.json").read_text())["env_steps"] == ENV_STEPS


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# Session scope: the tests sharing it run on one xdist worker (their group), but not
# necessarily one after another, and a module fixture would be rebuilt in between.
@pytest.fixture(scope="session")
def killed_run(tmp_path_factory):
    """A smoke run killed with SIGKILL twice at random moments, then finished (the full
    check is `scripts/faults.py --kills 20`, docs/results/faults.md)."""
    logdir = tmp_path_factory.mktemp("kills") / "run"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "faults.py"), "--kills", "2",
                           "--env-steps", str(ENV_STEPS), "--logdir", str(logdir), "--", *FAST],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    return logdir, done


@pytest.mark.xdist_group("killed_run")
def test_random_kills_lose_nothing(killed_run):
    logdir, done = killed_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 SIGKILLs" in done.stdout and done.stdout.strip().endswith("OK")
    _assert_finished_exactly(logdir)


@pytest.mark.xdist_group("killed_run")
def test_truncated_newest_checkpoint_resumes_from_the_older_one(killed_run, tmp_path):
    logdir = tmp_path / "run"
    shutil.copytree(killed_run[0], logdir)
    older, newest = saved_steps(logdir)[-2:]
    _truncate(logdir / "checkpoints" / str(newest) / "arrays" / "manifest.ocdbt")
    # In a subprocess: what orbax leaves behind a failed read goes to the real stderr.
    done = subprocess.run([sys.executable, "-m", "agent.cli", *_train_args(logdir)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    out, err = done.stdout, done.stderr
    assert len(err.strip().splitlines()) == 1, err[-4000:]
    [warning] = err.strip().splitlines()
    assert warning.startswith(f"warning: checkpoint {logdir}/checkpoints/{newest} is unreadable")
    assert warning.endswith(
        f"moved it to {newest}.corrupt-1 and resuming from the one at env step {older}")
    assert f"resuming {logdir} at {older} env steps" in out
    assert (logdir / "checkpoints" / f"{newest}.corrupt-1" / "arrays").is_dir()  # kept
    _assert_finished_exactly(logdir)


@pytest.mark.xdist_group("killed_run")
def test_another_config_in_a_run_directory_is_refused_naming_what_differs(
        killed_run, tmp_path, capsys):
    logdir = tmp_path / "run"
    shutil.copytree(killed_run[0], logdir)
    assert main([*_train_args(logdir), "--train.batch-size", "8"]) == 2
    assert "train.batch_size: 16 -> 8" in capsys.readouterr().err


@pytest.mark.xdist_group("killed_run")
def test_evaluate_rewrites_eval_json_from_the_checkpoint(killed_run, tmp_path):
    logdir = tmp_path / "run"
    shutil.copytree(killed_run[0], logdir)
    assert main(["evaluate", str(logdir), "--episodes", "3", "--video"]) == 0
    result = json.loads((logdir / "eval.json").read_text())
    assert len(result["returns"]) == 3 and np.isfinite(result["mean_return"])
    assert (logdir / "eval.gif").stat().st_size > 0
    # The exploring policy's evaluation sits beside the greedy one, which stays the result.
    greedy = (logdir / "eval.json").read_bytes()
    assert main(["evaluate", str(logdir), "--episodes", "3", "--sampled"]) == 0
    assert (logdir / "eval.json").read_bytes() == greedy
    sampled = json.loads((logdir / "eval_sampled.json").read_text())
    assert len(sampled["returns"]) == 3 and np.isfinite(sampled["mean_return"])


@pytest.mark.xdist_group("killed_run")
def test_no_readable_checkpoint_stops_in_one_line(killed_run, tmp_path, capsys):
    logdir = tmp_path / "run"
    shutil.copytree(killed_run[0], logdir)
    steps = saved_steps(logdir)
    for step in steps:
        _truncate(logdir / "checkpoints" / str(step) / "counters" / "metadata")
    assert main(_train_args(logdir)) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"dreamzero train: error: no readable checkpoint in {logdir}/")
    assert f"(the newest, at env step {steps[-1]}: JSONDecodeError: " in line
    assert "move that directory aside to start the run over, or use a new --logdir" in line
    assert saved_steps(logdir) == steps  # nothing moved: the cause may be the code


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    saved, save = [], ocp.CheckpointManager.save

    def save_until_the_disk_is_full(self, step, *args, **kwargs):
        if saved:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        saved.append(step)
        return save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save_until_the_disk_is_full)
    assert main(_train_args(tmp_path)) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "failed (OSError: [Errno 28] No space left on device)" in line
    assert f"the one at env step {saved[0]} is intact" in line
    assert line.endswith("rerun the same command to resume")
    assert saved_steps(tmp_path) == saved
    assert evaluate.load_model(tmp_path)[3] == saved[0]  # and it reads back


def _signal_after_first_checkpoint(logdir: Path, sig: int) -> tuple[int, str, int]:
    """Starts a run, sends `sig` once it has a checkpoint and waits for it to exit.

    -> (exit code, stderr, env step of the newest checkpoint when the signal was sent)."""
    run = subprocess.Popen([sys.executable, "-m", "agent.cli", *_train_args(logdir)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           cwd=ROOT)
    deadline = time.monotonic() + 300
    while not saved_steps(logdir):
        assert run.poll() is None, "the run ended before it could be signalled"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.1)
    signalled_after = saved_steps(logdir)[-1]
    run.send_signal(sig)
    stderr = run.communicate(timeout=120)[1]
    return run.returncode, stderr, signalled_after


def test_sigterm_checkpoints_the_step_reached_and_the_rerun_finishes(tmp_path, capsys):
    logdir = tmp_path / "run"
    returncode, stderr, signalled_after = _signal_after_first_checkpoint(logdir, signal.SIGTERM)
    assert returncode == 143, stderr[-2000:]
    [line] = stderr.strip().splitlines()
    stopped = re.fullmatch(rf"dreamzero train: stopped by SIGTERM at env step (\d+), "
                           rf"checkpointed in {logdir}; rerun the same command to resume", line)
    assert stopped, line
    stopped_at = int(stopped[1])
    assert signalled_after <= stopped_at < ENV_STEPS
    assert saved_steps(logdir)[-1] == stopped_at  # nothing after the signal is lost

    assert main(_train_args(logdir)) == 0
    assert f"resuming {logdir} at {stopped_at} env steps" in capsys.readouterr().out
    _assert_finished_exactly(logdir)


def test_sigint_says_how_to_resume(tmp_path):
    logdir = tmp_path / "run"
    returncode, stderr, _ = _signal_after_first_checkpoint(logdir, signal.SIGINT)
    assert returncode == 130, stderr[-2000:]
    assert f"interrupted; rerun the same command to resume {logdir}" in stderr
    assert "Traceback" not in stderr
    assert saved_counters(logdir)["env_steps"] < ENV_STEPS


@pytest.mark.parametrize(("env", "problem"), [("NaNObservation", "observation holds nan"),
                                              ("NaNReward", "reward is nan")])
def test_bad_env_data_is_refused_in_one_line(tmp_path, capsys, env, problem):
    name = f"{FAULTY_ENV}:{env}"
    assert main(["train", "--preset", "smoke", "--env", name, "--logdir", str(tmp_path),
                 "--log.progress", "False"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"dreamzero train: error: env custom:{name}, env index 1, step "
                           f"{BAD_STEP}: {problem} (must be finite)")
    # Evaluation steps the same VectorEnv, so it refuses the same data.
    with make_env(name, num_envs=2, seed=0, mode="eval") as env_:
        env_.reset()
        with pytest.raises(EnvDataError, match=f"env index 1, step {BAD_STEP}: {problem}"):
            for _ in range(BAD_STEP):
                env_.step(np.zeros(2, np.int64))


def test_an_exception_in_the_env_keeps_its_traceback_then_says_where_the_run_stands(
        tmp_path, capsys):
    assert main(["train", "--preset", "smoke", "--env", f"{FAULTY_ENV}:Crashing", "--logdir",
                 str(tmp_path), "--log.progress", "False"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "RuntimeError: the simulator lost its connection" in lines
    assert lines[-1] == (f"dreamzero train: {tmp_path} has no checkpoint yet; fix the error "
                         "above and rerun the same command to resume")


def test_a_diverged_loss_names_the_last_checkpoint(tmp_path):
    window = train_lib._Window(metrics=[{"loss/value": jnp.array([1.0, jnp.nan])}],
                               start_updates=40)
    checkpointer = Checkpointer(tmp_path)
    with pytest.raises(train_lib.NonFiniteLossError,
                       match="loss/value became nan at update 42; there is no checkpoint yet"):
        train_lib._check_finite(window, checkpointer)
    params = {"w": jnp.zeros(3)}
    state = train_lib.TrainState(params=params, target_params=params, opt_state=(),
                                 rng=jnp.zeros(2, jnp.uint32))
    replay = replay_lib.init(num_envs=1, capacity=4, frame_shape=(2,),
                             frame_dtype=jnp.float32, num_actions=2)
    checkpointer.save(120, state=state, replay=replay, counters={"env_steps": 120})
    with pytest.raises(train_lib.NonFiniteLossError,
                       match="the last good checkpoint is at env step 120 in "):
        train_lib._check_finite(window, checkpointer)
    checkpointer.close()


def _bad_run_dirs(root: Path) -> dict[str, Path]:
    """Directories that no command can use, each with the config.json it has."""
    cfg = config_lib.smoke()
    dirs = {}
    for name, config in [("not a run", None), ("foreign config", '{"env": "pong"}'),
                         ("config is a list", "[1, 2]"), ("config is torn", '{"env": {"na'),
                         ("unfinished", "smoke"), ("empty metrics", "smoke"),
                         ("newer version", "retired"), ("older version", "0.1.0")]:
        path = dirs[name] = root / name.replace(" ", "_")
        path.mkdir()
        if config == "smoke":
            write_config(path, cfg)
        elif config == "retired":  # a knob this version no longer has
            data = config_lib.to_dict(cfg)
            data["model"]["retired_knob"] = 1
            data["dreamzero_version"] = "9.9.0"
            (path / "config.json").write_text(json.dumps(data))
        elif config == "0.1.0":  # knobs measured, not adopted and removed in 0.2.0
            data = config_lib.to_dict(cfg)
            data["model"] |= {"bin_width": 1.0, "target_smoothing": 0.0, "dtype": "float32"}
            data["train"]["mixed_value_age"] = 20_000
            data["dreamzero_version"] = "0.1.0"
            (path / "config.json").write_text(json.dumps(data))
        elif config is not None:
            (path / "config.json").write_text(config)
    (dirs["empty metrics"] / "metrics.jsonl").write_text("")
    dirs["missing"] = root / "missing"
    return dirs


VERSION = importlib.metadata.version("dreamzero")
_REFUSALS = {  # what each command's one line says, per bad directory
    "missing": ("config.json not found", "no such run directory"),
    "not a run": ("config.json not found", "no run directories (with config.json)"),
    "foreign config": ("has no env.name, so it is not a dreamzero config",) * 2,
    "config is a list": ("holds a JSON list, not a dreamzero config",) * 2,
    "config is torn": ("is not valid JSON",) * 2,
    "newer version": (f"was written by dreamzero 9.9.0, this is {VERSION} (config.json has "
                      "unknown fields ['retired_knob'] in 'model'): train into a new "
                      "--logdir",) * 2,
    "older version": (f"was written by dreamzero 0.1.0, this is {VERSION} (config.json has "
                      "unknown fields ['bin_width', 'dtype', 'target_smoothing'] in 'model'): "
                      "train into a new --logdir",) * 2,
    "unfinished": ("no checkpoint in", "nothing to report"),
    "empty metrics": ("no checkpoint in", "nothing to report"),
}


@pytest.mark.parametrize("command", ["evaluate", "dreams", "report"])
@pytest.mark.parametrize("case", list(_REFUSALS))
def test_bad_run_directories_are_refused_in_one_line(tmp_path, capsys, command, case):
    path = _bad_run_dirs(tmp_path)[case]
    args = ["report", "--runs", str(path), "--out", str(tmp_path / "out")] if (
        command == "report") else [command, str(path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    [line] = err.strip().splitlines()
    evaluate_or_dreams, report = _REFUSALS[case]
    assert line.startswith(f"dreamzero {command}: error: ")
    assert (report if command == "report" else evaluate_or_dreams) in line


def test_refusal_is_the_only_line_on_stderr(tmp_path):
    path = _bad_run_dirs(tmp_path)["unfinished"]
    done = subprocess.run([sys.executable, "-m", "agent.cli", "evaluate", str(path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"dreamzero evaluate: error: no checkpoint in {path}/checkpoints: the run has not "
        "saved one yet; train it first (dreamzero train)"]
