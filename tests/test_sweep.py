"""scripts/atari100k.py: the sweep's plan, its local process pool and its Ray backend."""

import importlib.util
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def sweep():
    path = Path(__file__).resolve().parents[1] / "scripts" / "atari100k.py"
    spec = importlib.util.spec_from_file_location("atari100k", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_sweep_dry_run_lists_commands_and_skips_finished(sweep, tmp_path, capsys):
    (tmp_path / "pong" / "seed_0").mkdir(parents=True)
    (tmp_path / "pong" / "seed_0" / "eval.json").write_text("{}")  # finished
    argv = ["--games", "Pong", "ms_pacman", "--seeds", "0", "1", "--root", str(tmp_path)]
    assert sweep.main([*argv, "--dry-run", "--", "--env-steps", "2000"]) == 0
    out = capsys.readouterr().out
    commands = [line for line in out.splitlines() if line.startswith("would run:")]
    assert len(commands) == 3
    assert not any("--env pong --seed 0 " in line for line in commands)
    assert "skip   pong seed 0" in out
    expected = (
        f"train --env ms_pacman --seed 1 --preset atari100k --logdir {tmp_path}/ms_pacman/seed_1"
    )
    assert any(line.endswith(f"{expected} --env-steps 2000") for line in commands)
    assert "time left: unknown" in out
    assert f"dreamzero report --runs {tmp_path} --out {tmp_path}/report" in out
    assert not (tmp_path / "ms_pacman").exists()  # a dry run creates nothing


def test_sweep_unknown_game_names_the_closest(sweep, tmp_path):
    with pytest.raises(SystemExit, match=r"unknown game 'pongg' \(closest: pong\b"):
        sweep.main(["--games", "pongg", "--root", str(tmp_path), "--dry-run"])


def test_sweep_runs_jobs_in_parallel_and_sorts_outcomes(sweep, tmp_path, capsys):
    def job(name, code):
        command = [sys.executable, "-c", code]
        return sweep.Job(name, 0, tmp_path / name, command)

    eval_json = tmp_path / "finishes" / "eval.json"
    jobs = [
        job("finishes", f"open({str(eval_json)!r}, 'w').write('{{}}')"),
        job("fails", "raise SystemExit(3)"),
        job("stops", "pass"),
    ]
    failed, stopped = sweep.run_jobs(jobs, parallel=2)
    assert [j.game for j in failed] == ["fails"] and [j.game for j in stopped] == ["stops"]
    out = capsys.readouterr().out
    assert "finishes seed 0: finished" in out and "FAILED (exit 3)" in out
    assert (tmp_path / "fails" / "sweep.log").exists()  # parallel runs log to their dir


# ----------------------------------------------------------------------------- Ray backend


def _trainer_of(logdir: Path) -> int | None:
    """The pid of the `dreamzero train` writing `logdir`, if one runs."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"train" in argv and str(logdir).encode() in argv:
                return int(proc.name)
    return None


def _kill_worker_after_first_checkpoint(logdir: Path, killed: list, timeout: float = 300):
    """SIGKILLs the Ray worker running `logdir`'s trainer once a checkpoint is on disk (orbax
    renames a step's directory to its number when the step is complete)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = logdir / "checkpoints"
        if steps.is_dir() and any(p.name.isdigit() for p in steps.iterdir()):
            trainer = _trainer_of(logdir)
            if trainer is not None:
                worker = int((Path("/proc") / str(trainer) / "stat").read_text().split()[3])
                os.kill(worker, signal.SIGKILL)  # the trainer dies with it (PDEATHSIG)
                killed.append(worker)
                return
        time.sleep(0.1)


# On the worker of tests/test_faults.py's killed run, whose compiled programs it reuses.
@pytest.mark.xdist_group("killed_run")
def test_ray_sweep_retries_a_killed_worker_and_reports(sweep, tmp_path):
    """A smoke run on a local Ray whose worker is killed after the run's first checkpoint:
    the retry resumes the run, it finishes, and the sweep writes its report.

    One run (catch seed 0, the fault tests' short smoke run, checkpointed every 10 updates
    here), so that nothing new compiles and nothing competes with it on the two cores: the
    local pool's test runs jobs side by side. docs/results/scale_out_cpu.md has a two-game
    sweep (pong, boxing) on Ray."""
    import ray

    train_args = ["--env-steps", "200", "--log.progress", "False", "--train.replay-ratio", "0.1",
                  "--log.checkpoint-interval", "10"]
    jobs = sweep.plan_jobs(["catch"], [0], tmp_path, "smoke", train_args)
    victim = jobs[0].logdir
    killed = []
    killer = threading.Thread(target=_kill_worker_after_first_checkpoint,
                              args=(victim, killed), daemon=True)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        killer.start()
        failed, stopped = sweep.run_jobs_ray(jobs, address=None, cpus_per_run=1,
                                             gpus_per_run=0, retries=2)
    finally:
        ray.shutdown()
    assert killed, "no checkpoint appeared to kill the worker after"
    assert failed == [] and stopped == []
    assert (victim / "eval.json").is_file()
    log = (victim / "sweep.log").read_text()
    assert "[sweep] attempt 2 " in log
    assert f"resuming {victim} at " in log.split("[sweep] attempt 2 ")[1]
    report = sweep.write_report(tmp_path)
    assert report.is_file() and report.parent == tmp_path / "report"
    assert "1 run(s) found" in report.read_text()
