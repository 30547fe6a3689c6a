"""Atari-100k sweep: one `dreamzero train` per game and seed, resumable.

    python scripts/atari100k.py --games all26 --seeds 0 1 2 --root runs/atari100k
    python scripts/atari100k.py --games pong breakout --seeds 0 --root runs/try \\
        --parallel 2 -- --env-steps 20000
    python scripts/atari100k.py --games all26 --seeds 0 1 2 --root /shared/atari100k \\
        --backend ray --address auto --gpus-per-run 0.5

Each run goes to ROOT/GAME/seed_S. Runs with an eval.json are finished and skipped; the
others are (re)started, which resumes them from their last checkpoint, so after an
interruption rerun the same command. Arguments after a bare `--` go to `dreamzero train`.
When every run has finished, the sweep ends with `dreamzero report` over ROOT.

Backends, on the same job list: `local` (default) runs `--parallel` runs at a time on this
machine; `ray` submits one Ray task per run with `--cpus-per-run` / `--gpus-per-run`, to
a running cluster (`--address auto`, ROOT on a path every machine shares) or to a Ray
started here, and retries a run whose worker died or whose trainer was stopped (up to
`--retries` times): the retry resumes from the run's last checkpoint. Ray is an optional
extra: pip install 'dreamzero[ray]'.
"""

from __future__ import annotations

import argparse
import ctypes
import difflib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from agent.envs import ATARI_100K_GAMES
from agent.scores import atari_game

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
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="local: a process pool on this machine (default); ray: Ray tasks")
    parser.add_argument("--parallel", type=int, default=1,
                        help="local: runs at a time (default 1)")
    parser.add_argument("--address", default=None,
                        help="ray: the cluster to join (auto: the one `ray start` runs here); "
                        "default: start a Ray on this machine")
    parser.add_argument("--cpus-per-run", type=float, default=1.0, help="ray: default 1")
    parser.add_argument("--gpus-per-run", type=float, default=0.0,
                        help="ray: default 0; a fraction lets runs share a GPU")
    parser.add_argument("--retries", type=int, default=3,
                        help="ray: restarts of a run that was killed or crashed (default 3)")
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


class RunInterrupted(RuntimeError):
    """A run's trainer died or exited with an error other than a refused config: worth a
    retry, which resumes it from its last checkpoint."""


def _die_with_parent() -> None:
    """Linux: the trainer gets SIGKILL if its Ray worker dies, so a retry never runs beside
    an orphan writing the same run directory."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1
_REFUSED = 2  # dreamzero train's exit status for a refused config: a retry cannot help
_ATTEMPT = "[sweep] attempt "


def _train_in_ray_worker(command: list[str], logdir: str, tracker, key: str,
                         gpus_per_run: float) -> int:
    """The body of a sweep's Ray task: one `dreamzero train`, its output to RUN/sweep.log.

    Returns the exit status of a finished or refused run; raises RunInterrupted otherwise
    (Ray then retries the task). A cancelled task stops its trainer with SIGTERM, which
    checkpoints the step it reached."""
    # No ray.get here: a task waiting on one lends its CPU to the next task meanwhile.
    tracker.start.remote(key)
    command = [*dreamzero_command(), *command[1:]]  # this machine's install
    env = dict(os.environ)
    if 0 < gpus_per_run < 1:  # JAX would preallocate 75% of a GPU that others share
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 * gpus_per_run:.2f}")
    log_path = Path(logdir) / "sweep.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Counted from the log, so attempts add up over reruns of the sweep too.
    before = log_path.read_text() if log_path.exists() else ""
    attempt = 1 + before.count(_ATTEMPT)
    with log_path.open("a") as log:
        if before and not before.endswith("\n"):  # a killed trainer's last progress bar
            print(file=log)
        print(f"{_ATTEMPT}{attempt} on {socket.gethostname()}: {shlex.join(command)}",
              file=log, flush=True)
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=_die_with_parent)
        try:
            code = proc.wait()
        except BaseException:  # ray.cancel raises KeyboardInterrupt here
            proc.terminate()
            proc.wait()
            raise
    if code not in (0, _REFUSED):
        raise RunInterrupted(f"{key}: dreamzero train exited with {code} (attempt {attempt})")
    return code


class _Tracker:
    """A Ray actor counting each run's attempts: the sweep's progress line."""

    def __init__(self):
        self.attempts: dict[str, int] = {}

    def start(self, key: str) -> None:
        self.attempts[key] = self.attempts.get(key, 0) + 1

    def counts(self) -> tuple[int, int]:
        """(runs started, retries so far)."""
        return len(self.attempts), sum(n - 1 for n in self.attempts.values())


def run_jobs_ray(jobs: list[Job], *, address: str | None, cpus_per_run: float,
                 gpus_per_run: float, retries: int) -> tuple[list[Job], list[Job]]:
    """Runs the jobs as Ray tasks; returns (failed, stopped before finishing).

    Joins the cluster at `address`, or uses the Ray this process already started, or
    starts one on this machine."""
    try:
        import ray
    except ImportError:
        sys.exit("atari100k.py: --backend ray needs Ray: pip install 'dreamzero[ray]'")
    if not jobs:
        return [], []
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    if __name__ != "__main__":  # imported (tests): workers cannot import this file by name
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    tracker = ray.remote(num_cpus=0)(_Tracker).remote()
    task = ray.remote(_train_in_ray_worker).options(
        num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=retries,
        retry_exceptions=[RunInterrupted])
    pending = {task.remote(job.command, str(job.logdir), tracker, f"{job.game} seed {job.seed}",
                           gpus_per_run): job
               for job in jobs}
    failed, stopped, shown = [], [], None
    bar = tqdm(total=len(jobs), unit="run", desc="sweep", dynamic_ncols=True)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=5.0)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    code = ray.get(ref)
                except ray.exceptions.RayError as error:  # retries used up, or Ray failed
                    code, error_line = None, str(error).strip().splitlines()[-1]
                if code == 0 and job.finished:
                    status = "finished"
                elif code == 0:
                    stopped.append(job)
                    status = "stopped before its final evaluation"
                else:
                    failed.append(job)
                    status = (f"REFUSED (exit {code}), see {job.logdir / 'sweep.log'}" if code
                              else f"FAILED after {retries} retries ({error_line})")
                bar.write(f"done   {job.game} seed {job.seed}: {status}")
                bar.update()
            started, retried = ray.get(tracker.counts.remote())
            counts = dict(running=started - bar.n, failed=len(failed), retried=retried)
            if counts != shown:  # redrawn only on a change: logs stay readable
                bar.set_postfix(counts)
                shown = counts
    except (KeyboardInterrupt, Terminated):
        for ref in pending:
            ray.cancel(ref)  # KeyboardInterrupt in the task: its trainer checkpoints
        ray.wait(list(pending), num_returns=len(pending), timeout=60.0)
        raise
    finally:
        bar.close()
    return failed, stopped


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    if args.parallel < 1:
        sys.exit("atari100k.py: --parallel must be at least 1")
    if args.cpus_per_run <= 0 or args.gpus_per_run < 0 or args.retries < 0:
        sys.exit("atari100k.py: --cpus-per-run must be > 0, --gpus-per-run and --retries >= 0")
    games = resolve_games(args.games)
    root = args.root.absolute()  # Ray workers elsewhere see the same shared path
    jobs = plan_jobs(games, args.seeds, root, args.preset, extra)
    todo = [job for job in jobs if not job.finished]
    for job in jobs:
        if job.finished:
            print(f"skip   {job.game} seed {job.seed}: finished ({job.logdir / 'eval.json'})")
    at_a_time = f"{args.parallel} at a time" if args.backend == "local" else "on Ray"
    print(
        f"{len(todo)} of {len(jobs)} run(s) to do ({len(games)} game(s) x {len(args.seeds)} "
        f"seed(s)), {at_a_time}; time left: {_time_left([], len(todo), 1)}"
    )
    report = f"dreamzero report --runs {root} --out {root / 'report'}"
    if args.dry_run:
        for job in todo:
            print(f"would run: {shlex.join(job.command)}")
        print(f"then: {report}")
        return 0
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        if args.backend == "ray":
            failed, stopped = run_jobs_ray(
                todo, address=args.address, cpus_per_run=args.cpus_per_run,
                gpus_per_run=args.gpus_per_run, retries=args.retries)
        else:
            failed, stopped = run_jobs(todo, args.parallel)
    except (KeyboardInterrupt, Terminated):
        print("\ninterrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    for job in failed:
        print(f"failed: {job.game} seed {job.seed} ({job.logdir})", file=sys.stderr)
    if stopped:
        print(f"{len(stopped)} run(s) stopped before finishing: rerun this command to resume")
    if failed or stopped:
        print(f"report, once they finish: {report}")
        return 1 if failed else 0
    print(f"report: {write_report(root)}")
    return 0


def write_report(root: Path) -> Path:
    """`dreamzero report --runs ROOT --out ROOT/report`; returns report.md's path."""
    from agent.report import build_report  # matplotlib and rliable: only when needed

    return build_report([root], root / "report")


if __name__ == "__main__":
    sys.exit(main())
