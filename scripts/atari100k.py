"""Atari-100k sweep: one `dreamzero train` per game and seed, resumable.

    python scripts/atari100k.py --games all26 --seeds 0 1 2 --root runs/atari100k
    python scripts/atari100k.py --games pong breakout --seeds 0 --root runs/try \\
        --parallel 2 -- --env-steps 20000

Each run goes to ROOT/GAME/seed_S. Runs with an eval.json are finished and skipped; the
others are (re)started, which resumes them from their last checkpoint, so after an
interruption rerun the same command. Arguments after a bare `--` go to `dreamzero train`.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from agent.scores import ATARI_100K_GAMES, atari_game

ALL_GAMES = "all26"


@dataclass(frozen=True)
class Job:
    game: str  # ALE id
    seed: int
    logdir: Path
    command: list[str]

    @property
    def finished(self) -> bool:
        return (self.logdir / "eval.json").is_file()


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """This script's own options, and the arguments after `--` for `dreamzero train`."""
    own, extra = argv, []
    if "--" in argv:
        split = argv.index("--")
        own, extra = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(
        prog="atari100k.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--games", nargs="+", required=True, help=f'game names ("pong", "MsPacman") or {ALL_GAMES}'
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="default: 0")
    parser.add_argument("--root", type=Path, required=True, help="runs go to ROOT/GAME/seed_S")
    parser.add_argument("--preset", default="atari100k", help="dreamzero train preset")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time (default 1)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    return parser.parse_args(own), extra


def resolve_games(names: list[str]) -> list[str]:
    """ALE ids for the names given, in order; exits with one line on an unknown name."""
    if ALL_GAMES in names:
        return list(ATARI_100K_GAMES)
    games = []
    for name in names:
        game = atari_game(name)
        if game is None:
            closest = difflib.get_close_matches(
                name.lower(), [*ATARI_100K_GAMES, ALL_GAMES], n=3, cutoff=0.5
            )
            hint = f"closest: {', '.join(closest)}" if closest else f"see {ALL_GAMES} in --help"
            sys.exit(f"atari100k.py: unknown game {name!r} ({hint})")
        if game not in games:
            games.append(game)
    return games


def dreamzero_command() -> list[str]:
    # The console script next to this interpreter works without activating the venv.
    local = Path(sys.executable).with_name("dreamzero")
    return [str(local) if local.exists() else shutil.which("dreamzero") or "dreamzero"]


def plan_jobs(
    games: list[str], seeds: list[int], root: Path, preset: str, extra: list[str]
) -> list[Job]:
    jobs = []
    for game in games:
        for seed in seeds:
            logdir = root / game / f"seed_{seed}"
            command = [
                *dreamzero_command(),
                "train",
                "--env",
                game,
                "--seed",
                str(seed),
                "--preset",
                preset,
                "--logdir",
                str(logdir),
                *extra,
            ]
            jobs.append(Job(game, seed, logdir, command))
    return jobs


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _time_left(durations: list[float], runs_left: int, parallel: int) -> str:
    if not durations:
        return "unknown (no run has finished yet)"
    return "~" + _duration(sum(durations) / len(durations) * runs_left / parallel)


def _start(job: Job, parallel: int) -> subprocess.Popen:
    job.logdir.mkdir(parents=True, exist_ok=True)
    print(f"start  {job.game} seed {job.seed}: {shlex.join(job.command)}", flush=True)
    if parallel == 1:
        return subprocess.Popen(job.command)  # output straight to the terminal
    # JAX preallocates 75% of GPU memory per process; let the runs share the GPU.
    env = {"XLA_PYTHON_CLIENT_MEM_FRACTION": f"{0.9 / parallel:.2f}", **os.environ}
    # Interleaved output would be unreadable: each run logs to its own file.
    with (job.logdir / "sweep.log").open("a") as log:
        return subprocess.Popen(job.command, stdout=log, stderr=subprocess.STDOUT, env=env)


class Terminated(Exception):
    """The sweep runner got SIGTERM (a scheduler, `kill`, `timeout`)."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def _stop(procs: list[subprocess.Popen], *, forward: bool) -> None:
    """Stops the running runs after the sweep itself was stopped."""
    if forward:  # SIGTERM reached only this process; Ctrl-C reaches the runs as well
        for proc in procs:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)  # time to exit cleanly
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_jobs(jobs: list[Job], parallel: int) -> tuple[list[Job], list[Job]]:
    """Runs the jobs, `parallel` at a time; returns (failed, stopped before finishing)."""
    pending = deque(jobs)
    running: dict[subprocess.Popen, tuple[Job, float]] = {}
    durations: list[float] = []
    failed, stopped = [], []
    try:
        while pending or running:
            while pending and len(running) < parallel:
                job = pending.popleft()
                running[_start(job, parallel)] = (job, time.monotonic())
            time.sleep(1.0)
            for proc in [p for p in running if p.poll() is not None]:
                job, started = running.pop(proc)
                took = time.monotonic() - started
                if proc.returncode != 0:
                    failed.append(job)
                    status = f"FAILED (exit {proc.returncode}), see {job.logdir}"
                elif not job.finished:
                    stopped.append(job)  # e.g. a time limit: the next sweep resumes it
                    status = "stopped before its final evaluation"
                else:
                    durations.append(took)
                    status = "finished"
                left = len(pending) + len(running)
                print(
                    f"done   {job.game} seed {job.seed}: {status} in {_duration(took)}; "
                    f"{left} run(s) left, time left {_time_left(durations, left, parallel)}",
                    flush=True,
                )
    except (KeyboardInterrupt, Terminated) as stop:
        _stop(list(running), forward=isinstance(stop, Terminated))
        raise
    return failed, stopped


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    if args.parallel < 1:
        sys.exit("atari100k.py: --parallel must be at least 1")
    games = resolve_games(args.games)
    jobs = plan_jobs(games, args.seeds, args.root, args.preset, extra)
    todo = [job for job in jobs if not job.finished]
    for job in jobs:
        if job.finished:
            print(f"skip   {job.game} seed {job.seed}: finished ({job.logdir / 'eval.json'})")
    print(
        f"{len(todo)} of {len(jobs)} run(s) to do ({len(games)} game(s) x {len(args.seeds)} "
        f"seed(s)), {args.parallel} at a time; time left: {_time_left([], len(todo), 1)}"
    )
    report = f"dreamzero report --runs {args.root} --out {args.root / 'report'}"
    if args.dry_run:
        for job in todo:
            print(f"would run: {shlex.join(job.command)}")
        print(f"then: {report}")
        return 0
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        failed, stopped = run_jobs(todo, args.parallel)
    except (KeyboardInterrupt, Terminated):
        print("\ninterrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    for job in failed:
        print(f"failed: {job.game} seed {job.seed} ({job.logdir})", file=sys.stderr)
    if stopped:
        print(f"{len(stopped)} run(s) stopped before finishing: rerun this command to resume")
    print(f"report: {report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
