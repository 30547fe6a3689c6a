"""Results report over run directories: per-game table, aggregate HNS with CIs, plots.

`build_report(run_dirs, out)` finds every run (a directory holding `config.json`), groups
finished runs (those with `eval.json`) by environment and seed, and writes into `out/`:

- `report.md`: per-game table, Atari-100k aggregates (mean / median / IQM of HNS with 95%
  stratified-bootstrap CIs from rliable), missing games and unfinished runs;
- `report.csv`, `report.json`: the same table and aggregates, machine-readable;
- `performance_profile.png`, `learning_curves.png`.

Aggregates need a (num_seeds, num_games) matrix. When games have different numbers of
finished seeds, every game contributes its lowest `k` seeds, `k` being the smallest seed
count of any game; the report says how many runs that leaves out. The per-game table
always uses every finished seed.
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from agent.checkpoint import RunDirError, read_config
from agent.envs import ATARI_100K_GAMES
from agent.scores import (
    METHODS,
    REPORT_METHODS,
    anchor,
    atari_game,
    display_name,
    human_normalized,
)

_ANCHORS = ("random", "human", *METHODS)  # reference scores of each Atari row
_PROFILE_TAUS = np.linspace(0.0, 8.0, 161)  # HNS thresholds; 0..8 as in rliable's Atari plots
_SMOOTH_EPISODES = 10  # trailing window for training-episode returns
_CURVE_POINTS = 200  # shared env-step grid on which seeds are averaged


# ----------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Curve:
    """A return-vs-env-steps series of one run."""

    steps: np.ndarray  # [T] float64 env steps, nondecreasing
    returns: np.ndarray  # [T] float64 raw scores


@dataclass(frozen=True)
class Run:
    """One run directory as found on disk."""

    path: Path
    env: str  # the env name as typed in the config ("pong", "CartPole-v1")
    key: str  # grouping key: the ALE id for Atari-100k games, else `env`
    seed: int
    preset: str
    final: dict | None  # eval.json; None while the run is unfinished
    train: Curve  # training episode returns
    evals: Curve  # periodic `eval/mean_return`
    last_env_steps: int | None  # from the last metrics line

    @property
    def is_atari(self) -> bool:
        return atari_game(self.key) is not None


def find_runs(run_dirs: Iterable[Path]) -> list[Run]:
    """Every run directory (one holding config.json) under `run_dirs`, each once."""
    paths = set()
    for root in run_dirs:
        for dirpath, dirnames, filenames in os.walk(root):
            if "config.json" in filenames:
                paths.add(Path(dirpath).resolve())
                dirnames.clear()  # a run's own subfolders (checkpoints, ...) hold no runs
    return [load_run(path) for path in sorted(paths)]


def load_run(path: Path) -> Run:
    """RunDirError when path's config.json is not a dreamzero config."""
    config, _ = read_config(path)
    env = config.env.name
    train, evals = [], []  # (env_steps, return) in log order
    last_env_steps = None
    for record in _read_jsonl(path / "metrics.jsonl"):
        if "env_steps" not in record:
            continue
        last_env_steps = int(record["env_steps"])
        if record.get("episode_return") is not None:
            train.append((record["env_steps"], record["episode_return"]))
        if record.get("eval/mean_return") is not None:
            evals.append((record["env_steps"], record["eval/mean_return"]))
    return Run(
        path=path,
        env=env,
        key=atari_game(env) or env,
        seed=config.seed,
        preset=config.preset,
        final=_read_eval(path / "eval.json"),
        train=_curve(train),
        evals=_curve(evals),
        last_env_steps=last_env_steps,
    )


def _curve(points: list[tuple[float, float]]) -> Curve:
    """A curve from logged (env_steps, return) points, in log order.

    A run resumed from an earlier checkpoint logs a stretch of env steps again; the later
    points replace the earlier ones there, so the curve moves forward in env steps.
    """
    kept: list[tuple[float, float]] = []
    for step, value in points:
        while kept and kept[-1][0] > step:
            kept.pop()
        kept.append((step, value))
    steps, returns = np.array(kept, dtype=np.float64).reshape(-1, 2).T
    return Curve(steps, returns)


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the trainer may be mid-write: the last line can be truncated
    return [record for record in records if isinstance(record, dict)]


def _read_eval(path: Path) -> dict | None:
    """eval.json; None while the run has not finished, RunDirError if it is not one."""
    try:
        final = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None  # absent or half-written: the run has not finished
    if not isinstance(final, dict) or not isinstance(final.get("mean_return"), int | float):
        raise RunDirError(f"{path} has no mean_return, so it is not a dreamzero evaluation: "
                          "rerun dreamzero evaluate on that run to rewrite it")
    return final


def _pick_one_per_seed(runs: list[Run]) -> tuple[list[Run], list[Run]]:
    """One run per (env, seed), preferring a finished one; returns (kept, duplicates)."""
    kept: dict[tuple[str, int], Run] = {}
    duplicates = []
    for run in runs:
        other = kept.get((run.key, run.seed))
        if other is None:
            kept[(run.key, run.seed)] = run
        elif other.final is None and run.final is not None:
            kept[(run.key, run.seed)] = run
            duplicates.append(other)
        else:
            duplicates.append(run)
    return list(kept.values()), duplicates


# ----------------------------------------------------------------------------- table


def game_rows(runs: list[Run], *, reps: int = 2000, seed: int = 0) -> list[dict]:
    """Per-environment results over finished seeds; Atari games first, in csv order.

    `reps` and `seed` are the bootstrap's for each game's 95% CI of its mean return."""
    finished: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: r.seed):
        if run.final is not None:
            finished.setdefault(run.key, []).append(run)
    atari = [key for key in ATARI_100K_GAMES if key in finished]
    other = sorted(key for key in finished if key not in ATARI_100K_GAMES)
    return [_game_row(key, finished[key], reps=reps, seed=seed) for key in atari + other]


def _game_row(key: str, runs: list[Run], *, reps: int, seed: int) -> dict:
    returns = [float(run.final["mean_return"]) for run in runs]
    mean = float(np.mean(returns))
    # The mean's 95% CI over seeds (a plain bootstrap: one game is one stratum); a single
    # seed has no spread to resample.
    ci_low = ci_high = None
    if len(returns) > 1:
        from rliable import metrics
        _, interval = bootstrap(np.asarray(returns)[:, None], metrics.aggregate_mean,
                                reps=reps, seed=seed)
        ci_low, ci_high = map(float, np.ravel(interval))
    row = {
        "env": key,
        "name": display_name(key) if atari_game(key) else key,
        "atari": atari_game(key) is not None,
        "seeds": [run.seed for run in runs],
        "num_seeds": len(runs),
        "returns": returns,
        "env_steps": [run.final.get("env_steps") for run in runs],
        "mean_return": mean,
        # Sample std over seeds; undefined for a single seed.
        "std_return": float(np.std(returns, ddof=1)) if len(runs) > 1 else None,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "hns": None,
        **{name: None for name in _ANCHORS},
        **{f"beats_{name}": None for name in _ANCHORS},
    }
    if row["atari"]:
        refs = anchor(key)
        row.update(refs)
        row["hns"] = human_normalized(key, mean)
        # Beating a score means clearing it: over seeds, the whole CI above it.
        lowest = mean if ci_low is None else ci_low
        for name, value in refs.items():
            row[f"beats_{name}"] = lowest > value
    return row


# ----------------------------------------------------------------------------- aggregates


def hns_matrix(rows: list[dict]) -> tuple[np.ndarray, list[str], int]:
    """HNS of finished Atari runs as a [k, num_games] matrix, the lowest k seeds per game.

    k is the smallest number of finished seeds of any game, so every column has as many
    runs as rliable's stratified bootstrap expects. Returns (matrix, games, runs left out).
    """
    atari = [row for row in rows if row["atari"]]
    if not atari:
        return np.zeros((0, 0)), [], 0
    k = min(row["num_seeds"] for row in atari)
    columns = [human_normalized(row["env"], np.asarray(row["returns"][:k])) for row in atari]
    left_out = sum(row["num_seeds"] - k for row in atari)
    return np.stack(columns, axis=1), [row["env"] for row in atari], left_out


def bootstrap(scores: np.ndarray, func, *, reps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """rliable's stratified-bootstrap point estimate and 95% CI [2, ...] of func(scores)."""
    from rliable import library
    # rliable 1.2 draws the resampled run indices from NumPy's global RNG (its
    # `random_state` only reaches arch), so seed that for this call and restore it after.
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            # arch deprecates the RandomState that rliable passes on; it still works.
            warnings.simplefilter("ignore", FutureWarning)
            points, intervals = library.get_interval_estimates(
                {"run": scores}, func, reps=reps, random_state=np.random.RandomState(seed)
            )
    finally:
        np.random.set_state(saved)
    return points["run"], intervals["run"]


def aggregate_hns(scores: np.ndarray, *, reps: int = 2000, seed: int = 0) -> dict:
    """Mean, median and IQM of a [num_seeds, num_games] HNS matrix with 95% CIs."""
    from rliable import metrics
    aggregators = {
        "mean": metrics.aggregate_mean,
        "median": metrics.aggregate_median,
        "iqm": metrics.aggregate_iqm,
    }
    point, (low, high) = bootstrap(
        scores,
        lambda x: np.array([f(x) for f in aggregators.values()]),
        reps=reps,
        seed=seed,
    )
    return {
        name: {"estimate": float(point[i]), "ci_low": float(low[i]), "ci_high": float(high[i])}
        for i, name in enumerate(aggregators)
    }


def _published_hns(games: Sequence[str], method: str) -> np.ndarray:
    """A method's published per-game scores as HNS, one run per game: [1, num_games]."""
    return np.array([[human_normalized(g, anchor(g)[method]) for g in games]])


def _published_aggregates(games: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean, median and IQM of each report method's published HNS over the same games."""
    from rliable import metrics
    aggregates = {}
    for method in REPORT_METHODS:
        hns = _published_hns(games, method)
        aggregates[method] = {
            "mean": float(metrics.aggregate_mean(hns)),
            "median": float(metrics.aggregate_median(hns)),
            "iqm": float(metrics.aggregate_iqm(hns)),
        }
    return aggregates


# ----------------------------------------------------------------------------- plots


def score_distribution(scores: np.ndarray) -> np.ndarray:
    """Fraction of runs (all seeds and games) with HNS > tau, for each profile tau.

    rliable's `score_distributions` vectorised: its per-tau Python loop would dominate
    the bootstrap's run time.
    """
    return (scores[..., None] > _PROFILE_TAUS).mean(axis=(0, 1))  # [seeds, games, taus] -> [taus]


def plot_performance_profile(
    scores: np.ndarray, games: Sequence[str], path: Path, *, reps: int = 2000, seed: int = 0
) -> Path:
    """Fraction of runs with HNS > tau, with a 95% CI band, next to published methods'."""
    point, (low, high) = bootstrap(scores, score_distribution, reps=reps, seed=seed)
    fig, (ax,) = _new_figure(figsize=(7, 4.5))
    ax.plot(_PROFILE_TAUS, point, lw=2, color="C0", label="dreamzero")
    ax.fill_between(_PROFILE_TAUS, low, high, color="C0", alpha=0.2)
    for i, method in enumerate(REPORT_METHODS, start=1):
        ax.plot(_PROFILE_TAUS, score_distribution(_published_hns(games, method)), lw=1.2,
                ls="--", color=f"C{i}", label=f"{METHODS[method]} (published)")
    ax.axvline(1.0, color="gray", lw=0.8, ls=":", label="human level")
    ax.set(
        title=f"Performance profile, Atari-100k ({len(games)} games, {len(scores)} seed(s))",
        xlabel=r"human-normalised score $\tau$",
        ylabel=r"fraction of runs with score $> \tau$",
        ylim=(0, 1.02),
        xlim=(_PROFILE_TAUS[0], _PROFILE_TAUS[-1]),
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=120)
    return path


def plot_learning_curves(runs: list[Run], path: Path) -> Path:
    """Return vs env steps per environment: mean over seeds with a ±1 std band."""
    by_key: dict[str, list[Run]] = {}
    for run in runs:
        by_key.setdefault(run.key, []).append(run)
    keys = [k for k in ATARI_100K_GAMES if k in by_key] + sorted(
        k for k in by_key if k not in ATARI_100K_GAMES
    )
    ncols = min(4, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = _new_figure(figsize=(4.2 * ncols, 3.2 * nrows + 0.8), nrows=nrows, ncols=ncols)
    for ax, key in zip(axes, keys, strict=False):
        _plot_env_curves(ax, key, by_key[key])
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    handles = {}
    for ax in axes[: len(keys)]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.suptitle("Return vs env steps: mean over seeds, shaded ±1 std")
    fig.supylabel("episode return (raw score)")
    for ax in axes[: len(keys)]:
        ax.set_xlabel("env steps")
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=4)
    fig.savefig(path, dpi=100)
    return path


def _plot_env_curves(ax, key: str, runs: list[Run]) -> None:
    name = display_name(key) if atari_game(key) else key
    ax.set_title(f"{name} ({len(runs)} seed(s))", fontsize=10)
    train = [_smooth(run.train) for run in runs if len(run.train.steps)]
    evals = [run.evals for run in runs if len(run.evals.steps)]
    for curves, label, color, style in (
        (train, f"train (mean of last {_SMOOTH_EPISODES} episodes)", "C0", "-"),
        (evals, "eval/mean_return", "C2", "--"),
    ):
        if curves:
            grid, mean, std = _mean_over_seeds(curves)
            ax.plot(grid, mean, color=color, ls=style, lw=1.5, label=label)
            ax.fill_between(grid, mean - std, mean + std, color=color, alpha=0.2)
    if not train and not evals:
        ax.text(0.5, 0.5, "no metrics yet", ha="center", va="center", transform=ax.transAxes)
        ax.set(xticks=[], yticks=[])
    if atari_game(key):
        refs = anchor(key)
        ax.axhline(refs["random"], color="gray", ls=":", lw=1, label="random")
        ax.axhline(refs["efficientzero"], color="C1", ls="-.", lw=1, label="EfficientZero")
    ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))
    ax.grid(alpha=0.3)


def _smooth(curve: Curve) -> Curve:
    """Trailing mean over the last `_SMOOTH_EPISODES` episodes (fewer at the start)."""
    cumsum = np.concatenate([[0.0], np.cumsum(curve.returns)])
    end = np.arange(1, len(curve.returns) + 1)
    start = np.maximum(0, end - _SMOOTH_EPISODES)
    return Curve(curve.steps, (cumsum[end] - cumsum[start]) / (end - start))


def _mean_over_seeds(curves: list[Curve]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interpolate each seed onto one env-step grid; mean and std where any seed has data.

    A seed counts only inside the env-step range it has reached, so unfinished seeds do
    not drag the curve's tail towards their last value.
    """
    low = min(c.steps[0] for c in curves)
    high = max(c.steps[-1] for c in curves)
    grid = np.linspace(low, high, _CURVE_POINTS)  # [points]
    values = np.stack(
        [
            np.where(
                (grid >= c.steps[0]) & (grid <= c.steps[-1]),
                np.interp(grid, c.steps, c.returns),
                np.nan,
            )
            for c in curves
        ]
    )  # [seeds, points]
    present = ~np.isnan(values)
    count = present.sum(axis=0)
    keep = count > 0
    filled = np.where(present, values, 0.0)[:, keep]
    mean = filled.sum(axis=0) / count[keep]
    var = (np.where(present[:, keep], filled - mean, 0.0) ** 2).sum(axis=0) / count[keep]
    return grid[keep], mean, np.sqrt(var)


def _new_figure(
    figsize: tuple[float, float], nrows: int = 1, ncols: int = 1
) -> tuple[Figure, np.ndarray]:
    """A figure on the Agg canvas and its axes, flattened.

    Figure + Agg instead of pyplot: no global figure registry, no process-wide backend.
    """
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False).ravel()


# ----------------------------------------------------------------------------- outputs


_CSV_COLUMNS = (
    "kind", "env", "name", "num_seeds", "mean_return", "std_return", "ci_low", "ci_high",
    "hns", "hns_ci_low", "hns_ci_high", *_ANCHORS, *(f"beats_{name}" for name in _ANCHORS),
)  # fmt: skip


def _write_csv(path: Path, rows: list[dict], aggregates: dict | None) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({"kind": "game", **row})
        if aggregates:
            for name in ("mean", "median", "iqm"):
                stats = aggregates[name]
                writer.writerow(
                    {
                        "kind": "aggregate",
                        "env": name,
                        "name": f"{name} HNS over {aggregates['num_games']} games",
                        "num_seeds": aggregates["seeds_per_game"],
                        "hns": stats["estimate"],
                        "hns_ci_low": stats["ci_low"],
                        "hns_ci_high": stats["ci_high"],
                        **{method: published[name]
                           for method, published in aggregates["published"].items()},
                    }
                )


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _fmt_ci(row: dict) -> str:
    if row["ci_low"] is None:
        return "—"
    return f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"


def _fmt_steps(steps: list) -> str:
    known = [s for s in steps if s is not None]
    if not known:
        return "?"
    low, high = min(known), max(known)
    return f"{low:,}" if low == high else f"{low:,}–{high:,}"


def _check(flag: bool | None) -> str:
    return "" if flag is None else ("✓" if flag else "✗")


def _markdown(
    run_dirs: Sequence[Path],
    runs: list[Run],
    duplicates: list[Run],
    rows: list[dict],
    aggregates: dict | None,
) -> str:
    atari_rows = [r for r in rows if r["atari"]]
    other_rows = [r for r in rows if not r["atari"]]
    presets = sorted({str(run.preset) for run in runs})
    lines = [
        "# dreamzero results",
        "",
        f"{len(runs)} run(s) found under {', '.join(f'`{d}`' for d in run_dirs)}; "
        f"preset(s): {', '.join(presets)}. Returns are the final evaluation's mean "
        "episode return (raw score) per seed; the table gives mean ± sample std over seeds.",
        "",
    ]
    if aggregates:
        lines += _aggregate_section(aggregates)
    if atari_rows:
        lines += [
            "## Atari-100k games",
            "",
            "HNS is of the mean over seeds; the 95% CI is the mean return's, a bootstrap over "
            "seeds. ✓ means clear of random / human play: the whole CI above it (one seed: "
            "its return). "
            "The published columns are each method's mean score at 100k steps "
            "(agent/scores.py gives the sources).",
            "",
            "| Game | Seeds | Env steps | Return | 95% CI | HNS | Random | Human | "
            + " | ".join(METHODS[m] for m in REPORT_METHODS) + " | > Random | > Human |",
            "|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(REPORT_METHODS)
            + ":-:|:-:|",
        ]
        lines += [
            f"| {r['name']} | {r['num_seeds']} | {_fmt_steps(r['env_steps'])} "
            f"| {_fmt(r['mean_return'])} ± {_fmt(r['std_return'])} | {_fmt_ci(r)} "
            f"| {_fmt(r['hns'], 3)} "
            f"| {_fmt(r['random'])} | {_fmt(r['human'])} | "
            + " | ".join(_fmt(r[m]) for m in REPORT_METHODS)
            + f" | {_check(r['beats_random'])} | {_check(r['beats_human'])} |"
            for r in atari_rows
        ]
        lines.append("")
    if other_rows:
        lines += [
            "## Other environments",
            "",
            "| Env | Seeds | Env steps | Return | 95% CI |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['name']} | {r['num_seeds']} | {_fmt_steps(r['env_steps'])} "
            f"| {_fmt(r['mean_return'], 2)} ± {_fmt(r['std_return'], 2)} | {_fmt_ci(r)} |"
            for r in other_rows
        ]
        lines.append("")
    lines += ["## Learning curves", "", "![Learning curves](learning_curves.png)", ""]
    lines += _completeness_section(runs, duplicates, rows)
    return "\n".join(lines)


def _aggregate_section(aggregates: dict) -> list[str]:
    games, k = aggregates["num_games"], aggregates["seeds_per_game"]
    published = aggregates["published"]
    lines = [
        "## Atari-100k aggregate (human-normalised score)",
        "",
        "| Metric | dreamzero | 95% CI | "
        + " | ".join(f"{METHODS[m]} (published)" for m in published) + " |",
        "|---|---:|---:|" + "---:|" * len(published),
    ]
    for name, label in (("mean", "Mean"), ("median", "Median"), ("iqm", "IQM")):
        stats = aggregates[name]
        lines.append(
            f"| {label} | {stats['estimate']:.3f} "
            f"| [{stats['ci_low']:.3f}, {stats['ci_high']:.3f}] | "
            + " | ".join(f"{published[m][name]:.3f}" for m in published) + " |"
        )
    lines += [
        "",
        f"Over {games} of 26 games with {k} seed(s) per game; 95% stratified-bootstrap "
        f"CIs (rliable, percentile, {aggregates['reps']} reps, seed {aggregates['seed']}). "
        "Each published column aggregates that method's per-game scores over the same games.",
    ]
    if aggregates["runs_left_out"]:
        lines.append(
            f"Games have unequal numbers of finished seeds, so each game contributes its "
            f"lowest {k} seed(s) to the aggregates; {aggregates['runs_left_out']} finished "
            "run(s) are left out of them (they are in the per-game table)."
        )
    if k == 1:
        lines.append(
            "With one seed per game the bootstrap has no run-to-run variation to resample: "
            "the CIs collapse to the point estimates."
        )
    if games < 26:
        lines.append(
            "Aggregates over a subset of the 26 games are not comparable with published "
            "26-game figures."
        )
    lines += ["", "![Performance profile](performance_profile.png)", ""]
    return lines


def _missing_games(runs: list[Run], rows: list[dict]) -> list[str] | None:
    """Atari-100k games with no finished run; None when no run is an Atari game."""
    if not any(run.is_atari for run in runs):
        return None
    done = {row["env"] for row in rows}
    return [game for game in ATARI_100K_GAMES if game not in done]


def _completeness_section(runs: list[Run], duplicates: list[Run], rows: list[dict]) -> list[str]:
    lines = ["## Missing and unfinished", ""]
    missing = _missing_games(runs, rows)
    if missing is not None:
        lines.append(
            f"- Atari-100k games without a finished run ({len(missing)} of 26): "
            + (", ".join(display_name(g) for g in missing) if missing else "none")
        )
    unfinished = [run for run in runs if run.final is None]
    lines.append(
        f"- Unfinished runs (no eval.json yet): {len(unfinished)}"
        + ("" if unfinished else " (all runs finished)")
    )
    lines += [
        f"  - `{run.path}` ({run.env}, seed {run.seed}, "
        f"env steps so far: {_fmt_steps([run.last_env_steps])})"
        for run in unfinished
    ]
    if duplicates:
        lines.append(f"- Ignored duplicate runs of an env and seed: {len(duplicates)}")
        lines += [f"  - `{run.path}` ({run.env}, seed {run.seed})" for run in duplicates]
    lines.append("")
    return lines


# ----------------------------------------------------------------------------- entry point


def build_report(run_dirs: list[Path], out: Path, *, reps: int = 2000, seed: int = 0) -> Path:
    """Write report.md, report.csv, report.json and plots into `out`; returns report.md.

    `reps` bootstrap replications with a fixed `seed`, so the CIs are reproducible.
    """
    run_dirs = [Path(d) for d in run_dirs]
    absent = [str(d) for d in run_dirs if not d.is_dir()]
    if absent:
        raise FileNotFoundError(f"no such run directory: {', '.join(absent)}")
    found = find_runs(run_dirs)
    if not found:
        raise FileNotFoundError("no run directories (with config.json) under "
                                f"{', '.join(map(str, run_dirs))}")
    if all(run.final is None and run.last_env_steps is None for run in found):
        raise RunDirError(f"nothing to report under {', '.join(map(str, run_dirs))}: no run "
                          "has an eval.json or a metrics line yet; train them further first")
    runs, duplicates = _pick_one_per_seed(found)
    rows = game_rows(runs, reps=reps, seed=seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    scores, games, left_out = hns_matrix(rows)
    aggregates = None
    if games:
        aggregates = {
            "num_games": len(games),
            "games": games,
            "seeds_per_game": int(scores.shape[0]),
            "runs_left_out": left_out,
            "reps": reps,
            "seed": seed,
            **aggregate_hns(scores, reps=reps, seed=seed),
            "published": _published_aggregates(games),
        }
        plot_performance_profile(
            scores, games, out / "performance_profile.png", reps=reps, seed=seed
        )
    plot_learning_curves(runs, out / "learning_curves.png")

    _write_csv(out / "report.csv", rows, aggregates)
    summary = {
        "games": rows,
        "aggregates": aggregates,
        "missing_games": _missing_games(runs, rows),
        "unfinished_runs": [
            {"path": str(r.path), "env": r.env, "seed": r.seed, "env_steps": r.last_env_steps}
            for r in runs
            if r.final is None
        ],
        "duplicate_runs": [str(r.path) for r in duplicates],
    }
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    report = out / "report.md"
    report.write_text(_markdown(run_dirs, runs, duplicates, rows, aggregates))
    return report
