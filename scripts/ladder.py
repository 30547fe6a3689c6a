"""The ladder: a fixed suite of small tasks, each at a fixed env-step budget, over seeds.

    python scripts/ladder.py                          # every task, seeds 0..4, 2 runs at a time
    python scripts/ladder.py --quick                  # catch, CartPole and the grid, seeds 0..2
    python scripts/ladder.py --tasks catch -- --search.kind gumbel   # try a knob
    python scripts/ladder.py --label "gumbel x 16" --append -- --search.kind gumbel

Every run is the default preset, exactly

    dreamzero train --env ENV --env-steps N --seed S --logdir RUNS_DIR/TASK/seedS \\
        --log.progress False --log.eval-interval N/10

followed by whatever comes after a bare `--`. Runs whose eval.json exists are reused, so
rerunning an interrupted ladder resumes it (each unfinished run from its last checkpoint);
`--fresh` deletes the selected runs first. Use a new --runs-dir when the arguments after
`--` change. Each run's output goes to its RUN/ladder.log.

Per task the ladder measures a uniform random policy itself (eval-mode envs, the runs' env
settings), bootstraps 95% CIs of the mean and IQM of the seeds' final greedy returns
(rliable, stratified bootstrap of the [seeds x 1] score matrix), counts the seeds that
solved the task, counts its late drops (seeds whose final greedy return lies below their
own best evaluation by more than the task's margin: a learnt task handed back unlearnt),
and writes a Markdown table to --out (default RUNS_DIR/ladder.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from agent import report

ROOT = Path(__file__).resolve().parents[1]

REPS = 2000  # bootstrap replications, as in `dreamzero report`
BOOTSTRAP_SEED = 0
RANDOM_SEED = 1_000  # the seed the trainer's final evaluation uses
WALL_FILE = "ladder_wall.json"  # seconds the ladder spent in a run's training command


@dataclass(frozen=True)
class Task:
    name: str  # --tasks name; runs go to RUNS_DIR/name/seedS
    env: str  # dreamzero train --env
    env_steps: int
    rule: Literal["return", "goal", "above_random"]
    """How a seed solves it: `return`: mean greedy return >= threshold; `goal`: a fraction
    >= threshold of the evaluation episodes reach the goal (examples/grid_env.py);
    `above_random`: mean return above the random policy's. An `above_random` task is solved
    when the lower end of the 95% CI of the mean return over seeds lies above random."""
    threshold: float | None
    best: str  # best achievable return, as the table shows it
    margin: float
    """A late drop: the final greedy return below the seed's best evaluation by more than
    this (about a sixth of the gap from random to best)."""
    flags: tuple[str, ...] = ()  # train flags of this task, before the ladder's own extras


TASKS = (
    Task("catch", "catch", 8_000, "return", 8.0, best="10", margin=3.0),
    Task("cartpole", "CartPole-v1", 10_000, "return", 475.0, best="500", margin=75.0),
    Task("acrobot", "Acrobot-v1", 20_000, "return", -100.0, best="≈ −60", margin=75.0),
    Task("grid", "examples/grid_env.py:Grid", 5_000, "goal", 0.8, best="0.94 (100% goal)",
         margin=0.2),
    # The grid drawn at an Atari frame's size: its frames take the conv representation.
    Task("grid-conv", "examples/grid_env.py:LargeGrid", 5_000, "goal", 0.8,
         best="0.94 (100% goal)", margin=0.2),
    # Catch through the conv world model (spatial latent, conv dynamics), as large frames go.
    Task("catch-conv", "catch", 8_000, "return", 8.0, best="10", margin=3.0,
         flags=("--model.max-flat-image", "0")),
    # A sparse reward at the end of a line: a greedy policy that loops never arrives.
    Task("corridor", "examples/corridor_env.py:Corridor", 5_000, "return", 0.8, best="0.90",
         margin=0.2),
    # Breakout: the most catch-like MinAtar game, with episodes short enough (random: ~9
    # steps) to keep evaluation cheap. 10k steps: about 10 minutes of one core, scaled from
    # catch's 8k in 8 CPU-minutes (docs/results/quickstart_cpu.md, removed; see commit
    # 52fbb9e) at the same model size.
    # MinAtar's own protocol stays: sticky actions (p = 0.1) and difficulty ramping.
    Task("minatar-breakout", "MinAtar/Breakout-v1", 10_000, "above_random", None, best="—",
         margin=1.5),
    # Box actions (the sampled search): swing the pendulum up and hold it.
    Task("pendulum", "Pendulum-v1", 20_000, "return", -200.0, best="≈ −150", margin=150.0),
)
QUICK_TASKS = ("catch", "cartpole", "grid")


@dataclass(frozen=True)
class SeedResult:
    seed: int
    env_steps: int  # as trained, from eval.json
    returns: list[float]  # per evaluation episode, from eval.json
    wall_s: float | None  # None: the ladder did not time this run
    curve: tuple[tuple[int, float], ...] = ()  # (env steps, mean greedy return) per periodic eval


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float  # 95% CI
    high: float


@dataclass(frozen=True)
class Summary:
    task: Task
    seeds: list[SeedResult]  # finished seeds only
    planned: int  # seeds asked for
    mean: Estimate | None  # None: no seed finished
    iqm: Estimate | None
    random: list[float]  # per random-policy episode


# ----------------------------------------------------------------------------- scores


def reached_goal(episode_return: float) -> bool:
    """Whether an episode of examples/grid_env.py with this return reached the goal: iff the
    return is > 0 (every return with the goal is >= 0.42, every one without <= -0.02; see
    that file's docstring)."""
    return episode_return > 0


def goal_fraction(returns: list[float]) -> float:
    return float(np.mean([reached_goal(r) for r in returns]))


def seed_solved(task: Task, returns: list[float], random_mean: float) -> bool:
    if task.rule == "goal":
        return goal_fraction(returns) >= task.threshold
    if task.rule == "return":
        return float(np.mean(returns)) >= task.threshold
    return float(np.mean(returns)) > random_mean


def best_evaluation(seed: SeedResult) -> tuple[int, float]:
    """(env steps, mean greedy return) of the seed's best evaluation, the final one included
    (the latest of equals)."""
    final = (seed.env_steps, float(np.mean(seed.returns)))
    return max([*seed.curve, final], key=lambda point: (point[1], point[0]))


def late_drop(task: Task, seed: SeedResult) -> bool:
    """Whether the final greedy return lies below the seed's best evaluation by more than
    the task's margin."""
    return float(np.mean(seed.returns)) < best_evaluation(seed)[1] - task.margin


def task_solved(summary: Summary) -> bool | None:
    """The task-level verdict of an `above_random` task; None for the other rules."""
    if summary.task.rule != "above_random" or summary.mean is None:
        return None
    return summary.mean.low > float(np.mean(summary.random))


def interval_estimates(scores: np.ndarray, *, reps: int = REPS,
                       seed: int = BOOTSTRAP_SEED) -> tuple[Estimate, Estimate]:
    """Mean and IQM of scores [seeds, 1] with 95% stratified-bootstrap CIs."""
    from rliable import metrics

    def mean_and_iqm(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_mean(x), metrics.aggregate_iqm(x)])

    point, ci = report.bootstrap(scores, mean_and_iqm, reps=reps, seed=seed)  # [2], [2, 2]
    mean, iqm = (Estimate(float(point[i]), float(ci[0, i]), float(ci[1, i])) for i in (0, 1))
    return mean, iqm


def load_seeds(runs_dir: Path, task: Task, seeds: list[int]) -> list[SeedResult]:
    """The finished seeds' results (runs with an eval.json), in seed order."""
    results = []
    for seed in seeds:
        run = run_dir(runs_dir, task, seed)
        if (run / "eval.json").is_file():
            final = json.loads((run / "eval.json").read_text())
            results.append(SeedResult(seed, int(final["env_steps"]),
                                      [float(r) for r in final["returns"]], read_wall(run),
                                      read_curve(run)))
    return results


def read_curve(run: Path) -> tuple[tuple[int, float], ...]:
    """The periodic evaluations in the run's metrics.jsonl, in env-step order."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return ()
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return tuple((int(r["env_steps"]), float(r["eval/mean_return"])) for r in records
                 if "eval/mean_return" in r)


def summarize(task: Task, seeds: list[SeedResult], planned: int, random: list[float], *,
              reps: int = REPS) -> Summary:
    mean = iqm = None
    if seeds:
        scores = np.array([[np.mean(s.returns)] for s in seeds])  # [seeds, 1]
        mean, iqm = interval_estimates(scores, reps=reps)
    return Summary(task, seeds, planned, mean, iqm, random)


# ----------------------------------------------------------------------------- markdown


def _num(x: float) -> str:
    return f"{x:.2f}".replace("-", "−")


def _estimate(e: Estimate | None) -> str:
    return "—" if e is None else f"{_num(e.value)} [{_num(e.low)}, {_num(e.high)}]"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} m" if hours else f"{minutes} m {secs:02d} s"


def _returns(task: Task, returns: list[float]) -> str:
    text = _num(float(np.mean(returns)))
    return f"{text} ({goal_fraction(returns):.0%} goal)" if task.rule == "goal" else text


def _rule(task: Task) -> str:
    if task.rule == "goal":
        return f"≥ {task.threshold:.0%} of episodes reach the goal"
    if task.rule == "return":
        return f"mean return ≥ {task.threshold:g}".replace("-", "−")
    return "CI of the mean above random"


def _solved(summary: Summary) -> str:
    random_mean = float(np.mean(summary.random))
    count = sum(seed_solved(summary.task, s.returns, random_mean) for s in summary.seeds)
    verdict = task_solved(summary)
    if verdict is None:
        return f"{count}/{len(summary.seeds)}"
    return f"{'yes' if verdict else 'no'} ({count}/{len(summary.seeds)} seeds above random)"


def _walls(summary: Summary) -> tuple[float | None, float | None]:
    """(mean, total) wall time of the seeds' training commands, over the timed seeds."""
    walls = [s.wall_s for s in summary.seeds if s.wall_s is not None]
    return (float(np.mean(walls)), float(np.sum(walls))) if walls else (None, None)


def _env_steps(summary: Summary) -> str:
    """The env steps the seeds trained for (arguments after `--` may change the budget)."""
    steps = sorted({s.env_steps for s in summary.seeds}) or [summary.task.env_steps]
    return ", ".join(f"{n:,}" for n in steps)


def _late_drops(summary: Summary) -> str:
    """Late drops over the seeds with periodic evaluations ("—" when none has them)."""
    tracked = [s for s in summary.seeds if s.curve]
    if not tracked:
        return "—"
    drops = sum(late_drop(summary.task, s) for s in tracked)
    return f"{drops}/{len(tracked)} (margin {_num(summary.task.margin)})"


def task_table(summaries: list[Summary]) -> list[str]:
    lines = [
        "| Task | Env steps | Seeds | Mean return [95% CI] | IQM [95% CI] | Random | Best "
        "| Solve rule | Solved | Late drops | Wall / run | Wall, all runs |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for s in summaries:
        mean_wall, total_wall = _walls(s)
        lines.append(
            f"| {s.task.name} (`{shlex.join([s.task.env, *s.task.flags])}`) | {_env_steps(s)} "
            f"| {len(s.seeds)}/{s.planned} | {_estimate(s.mean)} | {_estimate(s.iqm)} "
            f"| {_returns(s.task, s.random)} | {s.task.best} | {_rule(s.task)} | {_solved(s)} "
            f"| {_late_drops(s)} | {_duration(mean_wall)} | {_duration(total_wall)} |")
    return lines


def seed_table(summaries: list[Summary]) -> list[str]:
    lines = ["| Task | Seed | Greedy return | Solved | Best evaluation (env steps) | Late drop "
             "| Greedy returns over training | Wall |",
             "|---|---:|---:|:-:|---:|:-:|---|---:|"]
    for s in summaries:
        random_mean = float(np.mean(s.random))
        for seed in s.seeds:
            solved = "✓" if seed_solved(s.task, seed.returns, random_mean) else "✗"
            steps, best = best_evaluation(seed)
            drop = ("✗" if late_drop(s.task, seed) else "—") if seed.curve else ""
            curve = ", ".join(_num(r) for _, r in seed.curve)
            lines.append(f"| {s.task.name} | {seed.seed} | {_returns(s.task, seed.returns)} "
                         f"| {solved} | {_num(best)} ({steps:,}) | {drop} | {curve} "
                         f"| {_duration(seed.wall_s)} |")
    return lines


def render_section(summaries: list[Summary], *, label: str, header: dict[str, str],
                   extra: list[str], reps: int = REPS) -> str:
    """One Markdown section: heading, provenance, the task table and the per-seed table."""
    train = ("dreamzero train --env ENV --env-steps N --seed S --logdir RUNS_DIR/TASK/seedS "
             "--log.progress False --log.eval-interval N/10")
    if extra:
        train += " " + shlex.join(extra)
    lines = [
        f"## {label or 'Ladder'} ({header['date']})",
        "",
        f"- Command: `{header['command']}`",
        f"- Each run: `{train}`" + ("" if "--preset" in extra else " (the default preset)"),
        f"- Commit: {header['commit']}",
        f"- Machine: {header['cpu']}",
        f"- Ladder wall time: {header['wall']}",
        "",
        "Returns are each seed's final greedy evaluation (eval.json), mean and IQM over seeds "
        f"with 95% stratified-bootstrap CIs (rliable, percentile, {reps} reps); Random is a "
        "uniform random policy measured here on the same env. Every tenth of a run a "
        "periodic greedy evaluation (a tenth of the final one's episodes, at least one per "
        "eval env) records the curve; a late drop is a final return below the seed's best "
        "evaluation by more than the task's margin.",
        "",
        *task_table(summaries),
        "",
        *seed_table(summaries),
        "",
    ]
    return "\n".join(lines)


def write_markdown(path: Path, section: str, *, append: bool) -> None:
    if append and path.is_file():
        text = path.read_text().rstrip("\n") + "\n\n" + section
    else:
        text = ("# The ladder on CPU\n\n`python scripts/ladder.py` trains a fixed suite of small "
                "tasks at fixed env-step budgets over seeds; each section names its command.\n\n"
                + section)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ----------------------------------------------------------------------------- provenance


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return f"unknown CPU, {os.cpu_count()} logical cores"
    model = next((line.split(":", 1)[1].strip() for line in lines
                  if line.startswith("model name")), "unknown CPU")
    return f"{model}, {os.cpu_count()} logical cores"


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"`{commit}`" + (" with uncommitted changes" if dirty else "")


# ----------------------------------------------------------------------------- runs


def run_dir(runs_dir: Path, task: Task, seed: int) -> Path:
    return runs_dir / task.name / f"seed{seed}"


def train_args(task: Task, seed: int, logdir: Path, extra: list[str]) -> list[str]:
    """The arguments after `dreamzero train`."""
    return ["--env", task.env, "--env-steps", str(task.env_steps), "--seed", str(seed),
            "--logdir", str(logdir), "--log.progress", "False",
            "--log.eval-interval", str(task.env_steps // 10), *task.flags, *extra]


def dreamzero() -> str:
    # The console script next to this interpreter works without activating the venv.
    local = Path(sys.executable).with_name("dreamzero")
    return str(local) if local.exists() else shutil.which("dreamzero") or "dreamzero"


def read_wall(run: Path) -> float | None:
    path = run / WALL_FILE
    return json.loads(path.read_text())["seconds"] if path.is_file() else None


def train(task: Task, seed: int, logdir: Path, extra: list[str]) -> int:
    """Runs one training command to its end; adds its wall time to the run's record."""
    logdir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with (logdir / "ladder.log").open("a") as log:
        code = subprocess.run([dreamzero(), "train", *train_args(task, seed, logdir, extra)],
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              check=False).returncode
    # Accumulated: a resumed run's parts add up to its whole.
    seconds = (read_wall(logdir) or 0.0) + time.monotonic() - start
    (logdir / WALL_FILE).write_text(json.dumps({"seconds": seconds}) + "\n")
    return code


def run_all(runs: list[tuple[Task, int]], runs_dir: Path, extra: list[str], *,
            jobs: int) -> list[str]:
    """Trains the runs without an eval.json, `jobs` at a time; returns failure messages."""
    todo = [(t, s) for t, s in runs if not (run_dir(runs_dir, t, s) / "eval.json").is_file()]
    failures = []
    bar = tqdm(total=len(runs), initial=len(runs) - len(todo), unit="run", desc="ladder")
    pool = ThreadPoolExecutor(max_workers=jobs)
    futures = {pool.submit(train, t, s, run_dir(runs_dir, t, s), extra): (t, s) for t, s in todo}
    try:
        for future in as_completed(futures):
            task, seed = futures[future]
            logdir = run_dir(runs_dir, task, seed)
            if future.result() != 0 or not (logdir / "eval.json").is_file():
                failures.append(f"{task.name} seed {seed} failed: see {logdir / 'ladder.log'}")
                bar.write(failures[-1])
            bar.set_postfix_str(f"{task.name} seed {seed}")
            bar.update()
    finally:
        # On Ctrl-C the runs got the signal too and stop cleanly; start no others.
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return failures


def random_returns(task: Task, extra: list[str], *, episodes: int,
                   seed: int = RANDOM_SEED) -> list[float]:
    """Returns of `episodes` whole episodes of uniform random actions on eval-mode envs
    built with the runs' env settings."""
    from agent.cli import parse_train_args
    from agent.envs import make_env

    cfg = parse_train_args(train_args(task, 0, Path("unused"), extra))
    num_envs = min(episodes, 8)
    rng = np.random.default_rng(seed)
    # Each env plays its own quota, so short episodes are not over-represented.
    quota = episodes // num_envs + (np.arange(num_envs) < episodes % num_envs)  # [N]
    returns: list[list[float]] = [[] for _ in range(num_envs)]
    with make_env(task.env, num_envs=num_envs, seed=seed, mode="eval",
                  **cfg.env.keywords()) as env:
        env.reset()
        while any(len(r) < q for r, q in zip(returns, quota, strict=True)):
            step = env.step(rng.uniform(-1, 1, (num_envs, env.spec.action_dim))
                            if env.spec.continuous else rng.integers(env.num_actions,
                                                                     size=num_envs))
            for i in np.flatnonzero(step.terminated | step.truncated):
                if len(returns[i]) < quota[i]:
                    returns[i].append(float(step.episode_return[i]))
    return [r for per_env in returns for r in per_env]


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """This script's options, and the arguments after `--` for `dreamzero train`."""
    own, extra = argv, []
    if "--" in argv:
        split = argv.index("--")
        own, extra = argv[:split], argv[split + 1:]
    parser = argparse.ArgumentParser(prog="ladder.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=[t.name for t in TASKS],
                        help="default: all (with --quick: " + ", ".join(QUICK_TASKS) + ")")
    parser.add_argument("--seeds", nargs="+", type=int,
                        help="default: 0 1 2 3 4 (with --quick: 0 1 2)")
    parser.add_argument("--quick", action="store_true",
                        help="3 seeds of " + ", ".join(QUICK_TASKS))
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/ladder"),
                        help="each run's logdir is RUNS_DIR/TASK/seedS (default runs/ladder)")
    parser.add_argument("--fresh", action="store_true",
                        help="delete the selected runs and train them again")
    parser.add_argument("--out", type=Path,
                        help="Markdown file to write (default RUNS_DIR/ladder.md)")
    parser.add_argument("--append", action="store_true",
                        help="append a section to --out instead of rewriting it")
    parser.add_argument("--label", default="", help="heading of this section")
    parser.add_argument("--random-episodes", type=int, default=100,
                        help="episodes of the random policy per task (default 100)")
    args = parser.parse_args(own)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return args, extra


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, extra = parse_args(argv)
    started = time.monotonic()
    names = args.tasks or (QUICK_TASKS if args.quick else [t.name for t in TASKS])
    tasks = [t for t in TASKS if t.name in names]
    seeds = args.seeds or list(range(3 if args.quick else 5))
    runs_dir = args.runs_dir.resolve()
    out = (args.out or runs_dir / "ladder.md").resolve()
    # Task envs such as examples/grid_env.py are paths from the repository root.
    os.chdir(ROOT)
    runs = [(task, seed) for task in tasks for seed in seeds]
    if args.fresh:
        for task, seed in runs:
            shutil.rmtree(run_dir(runs_dir, task, seed), ignore_errors=True)
    reused = sum((run_dir(runs_dir, t, s) / "eval.json").is_file() for t, s in runs)
    try:
        failures = run_all(runs, runs_dir, extra, jobs=args.jobs)
    except KeyboardInterrupt:
        print("\nladder.py: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    summaries = []
    for task in tasks:
        random = random_returns(task, extra, episodes=args.random_episodes)
        summaries.append(summarize(task, load_seeds(runs_dir, task, seeds), len(seeds), random))
    header = {
        "command": shlex.join(["python", "scripts/ladder.py", *argv]),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "commit": git_commit(),
        "cpu": cpu_model(),
        "wall": f"{_duration(time.monotonic() - started)} for {len(runs) - reused} runs "
                f"trained {args.jobs} at a time and {reused} reused",
    }
    section = render_section(summaries, label=args.label, header=header, extra=extra)
    write_markdown(out, section, append=args.append)
    print(section)
    print(f"wrote {out}")
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
