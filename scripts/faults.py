"""Kills one smoke-sized training run with SIGKILL at random moments, reruns it each time,
and checks that nothing was lost or done twice.

    .venv/bin/python scripts/faults.py [--kills 20] [--env-steps 600] [--seed 0] [--logdir DIR]
        [-- MORE TRAIN FLAGS]

Each cycle starts the same `dreamzero train --preset smoke` command on the same run
directory and kills its process group at a random moment: for each kill a random env step
of the run is drawn, and the kill comes a random fraction of a checkpoint interval after
the run has checkpointed past it (so mid-step, mid-update or mid-write); when the run
already stands past it, the kill comes at a random moment of the start-up (imports,
compilation, restore), at the latest when the rerun writes its first checkpoint. No run
gets within a checkpoint interval of the end before its kill. After the last kill the run
is left to finish. Checked then:

- every rerun resumed from the newest checkpoint complete before its kill;
- the final counters equal the asked env steps (and the updates they imply), and the
  replay was written exactly once per env step (the checkpoint's `replay_written`);
- metrics.jsonl's env_steps strictly increase, one line per log interval;
- eval.json is of the final step, no checkpoint was unreadable, no temporary one is left,
  and no frame file that no checkpoint lists.

Prints a summary; exits 1 if an invariant fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agent import config as config_lib
from agent.checkpoint import listed_frame_files, saved_counters, saved_steps
from agent.cli import parse_train_args

ROOT = Path(__file__).resolve().parents[1]


def train_args(logdir: Path, env_steps: int, seed: int, extra: list[str]) -> list[str]:
    """`dreamzero train` flags: a smoke run checkpointing often; `extra` may override."""
    return ["--preset", "smoke", "--env-steps", str(env_steps), "--seed", str(seed),
            "--logdir", str(logdir), "--log.log-interval", "100",
            "--log.checkpoint-interval", "10", "--log.progress", "False", *extra]


def _start(command: list[str], out: Path, err: Path) -> subprocess.Popen:
    with out.open("w") as stdout, err.open("w") as stderr:
        # Unbuffered, so the resume line is on disk before the kill.
        return subprocess.Popen(command, cwd=ROOT, stdout=stdout, stderr=stderr,
                                start_new_session=True, env=os.environ | {"PYTHONUNBUFFERED": "1"})


def _resumed_at(out: Path) -> int | None:
    found = re.search(r"^resuming .* at (\d+) env steps", out.read_text(), re.MULTILINE)
    return int(found[1]) if found else None


@dataclasses.dataclass
class _Pace:
    """What the kills are timed by, measured as the reruns go."""

    startup: float = 10.0  # the shortest time from launch to a rerun's first checkpoint
    # The shortest time between two checkpoints: a longer one (a periodic evaluation in
    # between) could let the run finish before its kill.
    interval: float = 2.0


def kill_cycle(command: list[str], logdir: Path, out: Path, *, target: float, last: float,
               rng: random.Random, pace: _Pace) -> tuple[bool, int | None, str | None]:
    """Starts the run (output to `out` and its .err) and SIGKILLs it at a random moment
    (see the module docstring), at the latest once it has checkpointed past `last`, so
    that no run finishes before its kill.

    Returns (killed during start-up, env step it resumed at, failure or None).
    """
    before = saved_steps(logdir)
    newest = before[-1] if before else -1
    process = _start(command, out, out.with_suffix(".err"))
    launched = changed = time.perf_counter()
    at_startup = newest >= target
    kill_at = launched + rng.uniform(0, pace.startup) if at_startup else None
    first = True
    while process.poll() is None:
        now = time.perf_counter()
        steps = saved_steps(logdir)
        if steps and steps[-1] > newest:
            if first:
                pace.startup = min(pace.startup, now - launched)
            else:
                pace.interval = min(pace.interval, now - changed)
            first, newest, changed = False, steps[-1], now
            if at_startup or newest >= last:
                kill_at = now
            elif kill_at is None and newest >= target:
                kill_at = now + rng.uniform(0, pace.interval)
        if kill_at is not None and now >= kill_at:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            break
        time.sleep(0.02)
    else:
        return at_startup, None, f"the run ended (exit {process.returncode}) before its kill"
    resumed_at = _resumed_at(out)
    if before and resumed_at is not None and resumed_at != before[-1]:
        return at_startup, resumed_at, (f"resumed at {resumed_at}, not at the newest complete "
                                        f"checkpoint {before[-1]}")
    return at_startup, resumed_at, None


def check_finished(logdir: Path, logs: Path, cfg: config_lib.Config) -> tuple[list[str], str]:
    """The invariants of the finished run: (failures, summary lines)."""
    env_steps, failures = cfg.train.env_steps, []
    warned = sum(path.read_text().count("warning: checkpoint") for path in logs.glob("*.err"))
    if warned:
        failures.append(f"{warned} unreadable checkpoint(s) after SIGKILL")
    counters = saved_counters(logdir) if saved_steps(logdir) else {}
    expected = {"env_steps": env_steps, "updates": cfg.total_updates,
                "replay_written": env_steps}
    failures += [f"final {key} {counters.get(key)} != {value}"
                 for key, value in expected.items() if counters.get(key) != value]
    metrics = logdir / "metrics.jsonl"
    logged = [json.loads(line)["env_steps"] for line in metrics.read_text().splitlines()
              ] if metrics.exists() else []
    if any(b <= a for a, b in zip(logged, logged[1:], strict=False)):
        failures.append(f"metrics.jsonl env_steps not strictly increasing: {logged}")
    interval = cfg.log.log_interval
    if logged != list(range(interval, env_steps + 1, interval)):
        failures.append(f"metrics.jsonl env_steps {logged}, not one per log interval")
    path = logdir / "eval.json"
    evaluated = json.loads(path.read_text()).get("env_steps") if path.exists() else None
    if evaluated != env_steps:
        failures.append(f"eval.json env_steps {evaluated} != {env_steps}")
    checkpoints = logdir / "checkpoints"
    leftovers = [p.name for p in checkpoints.iterdir()
                 if not p.name.isdigit() and p.name != "frames"]
    listed = listed_frame_files(logdir)
    if listed is None:
        failures.append("a checkpoint's list of frame files does not read")
    leftovers += [f"frames/{p.name}" for p in (checkpoints / "frames").iterdir()
                  if p.name not in (listed or ())]
    if leftovers:
        failures.append(f"left in checkpoints/: {leftovers}")
    summary = (f"  final: env_steps {counters.get('env_steps')}, updates "
               f"{counters.get('updates')}/{cfg.total_updates}, replay written "
               f"{counters.get('replay_written')}, metrics.jsonl env_steps {logged}, eval.json "
               f"at {evaluated}\n  unreadable checkpoints: {warned}; left in checkpoints/: "
               f"{len(leftovers)}")
    return failures, summary


def run(kills: int, seed: int, logdir: Path, args: list[str]) -> int:
    """`args`: the `dreamzero train` flags of the run."""
    cfg = parse_train_args(args)
    env_steps = cfg.train.env_steps
    rng = random.Random(seed)
    # Short of the end by one checkpoint interval, so that no run finishes before its kill.
    last = env_steps - cfg.log.checkpoint_interval * env_steps / cfg.total_updates
    targets = sorted(rng.uniform(0, last) for _ in range(kills))
    command = [sys.executable, "-m", "agent.cli", "train", *args]
    logs = logdir.parent / f"{logdir.name}-logs"
    logs.mkdir(parents=True)
    pace, failures, resumed, at_startup = _Pace(), [], [], 0
    start = time.perf_counter()
    for i, target in enumerate(targets):
        launched = time.perf_counter()
        startup, resumed_at, failure = kill_cycle(command, logdir, logs / f"kill{i + 1}.out",
                                                  target=target, last=last, rng=rng,
                                                  pace=pace)
        at_startup += startup
        resumed += [resumed_at] if resumed_at is not None else []
        print(f"kill {i + 1}/{kills}: {time.perf_counter() - launched:5.1f} s after launch"
              f"{' (start-up)' if startup else ''}, resumed at {resumed_at}", flush=True)
        if failure:
            failures.append(f"kill {i + 1}: {failure}")
            break

    before = saved_steps(logdir)
    out = logs / "final.out"
    final = _start(command, out, out.with_suffix(".err"))
    final.wait()
    wall = time.perf_counter() - start
    errors = out.with_suffix(".err").read_text()
    resumed_at = _resumed_at(out)
    if before and resumed_at != before[-1]:
        failures.append(f"final rerun resumed at {resumed_at}, not at the newest complete "
                        f"checkpoint {before[-1]}")
    if final.returncode != 0 or "Traceback" in errors:
        failures.append(f"final rerun exited {final.returncode}: {errors.strip()[-500:]}")
    invariants, summary = check_finished(logdir, logs, cfg)
    failures += invariants

    minutes, seconds = divmod(round(wall), 60)
    print(f"faults: {len(targets)} SIGKILLs of one smoke run ({env_steps} env steps, seed "
          f"{seed}) and the final rerun in {minutes} m {seconds:02d} s; {at_startup} kills "
          f"during start-up, {len(targets) - at_startup} while training")
    print(f"  resumed at env steps: {', '.join(map(str, resumed + [resumed_at]))}")
    print(summary)
    for failure in failures:
        print(f"FAILED: {failure}")
    print("OK" if not failures else f"{len(failures)} invariant(s) failed; logs in {logs}")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--env-steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logdir", type=Path, default=None,
                        help="run directory (default: a fresh temporary one); its logs go "
                             "next to it, in LOGDIR-logs")
    parser.add_argument("extra", nargs="*", help="after --: more `dreamzero train` flags")
    args = parser.parse_args()
    logdir = args.logdir or Path(tempfile.mkdtemp(prefix="dreamzero-faults-")) / "run"
    if logdir.exists():
        parser.error(f"{logdir} exists: the check needs a fresh run directory")
    return run(args.kills, args.seed, logdir,
               train_args(logdir, args.env_steps, args.seed, args.extra))


if __name__ == "__main__":
    sys.exit(main())
