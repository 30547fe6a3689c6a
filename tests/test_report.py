import json

import numpy as np
import pytest
from rliable import metrics

from agent.envs import ATARI_100K_GAMES
from agent.report import build_report, load_run, score_distribution
from agent.scores import anchor, human_normalized

REPS = 200  # enough for the checks here, and fast
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(root, env, seed, *, mean_return=None, metrics_lines=(), preset="atari100k"):
    """A run directory as the trainer leaves it; eval.json only if `mean_return` is given."""
    run = root / env.replace("/", "_") / f"seed_{seed}"
    run.mkdir(parents=True)
    config = {"env": {"name": env}, "seed": seed, "preset": preset}
    (run / "config.json").write_text(json.dumps(config))
    if metrics_lines:
        (run / "metrics.jsonl").write_text("\n".join(metrics_lines))
    if mean_return is not None:
        final = {"env": env, "env_steps": 100_000, "returns": [mean_return] * 3}
        (run / "eval.json").write_text(json.dumps({**final, "mean_return": mean_return}))
    return run


def learning_metrics(final_return, *, truncated_tail=False):
    lines = []
    for step in range(0, 100_001, 5_000):
        record = {"env_steps": step, "updates": step, "loss/value": 0.1}
        record["episode_return"] = final_return * step / 100_000
        if step % 25_000 == 0:
            record["eval/mean_return"] = final_return * step / 100_000
        lines.append(json.dumps(record))
    if truncated_tail:
        lines.append('{"env_steps": 100500, "episode_ret')  # the trainer was mid-write
    return lines


@pytest.fixture(scope="module")
def efficientzero_report(tmp_path_factory):
    """EfficientZero's published scores, as one finished seed per game."""
    root = tmp_path_factory.mktemp("ez_runs")
    for game in ATARI_100K_GAMES:
        write_run(root, game, 0, mean_return=anchor(game)["efficientzero"])
    out = tmp_path_factory.mktemp("ez_report")
    build_report([root], out, reps=REPS)
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def partial_sweep(tmp_path_factory):
    """Pong with three seeds, Breakout with one and one unfinished, a non-Atari run."""
    root = tmp_path_factory.mktemp("partial_runs")
    for seed, score in enumerate([-3.05, 0.0, 5.0]):
        write_run(
            root, "ALE/Pong-v5", seed, mean_return=score, metrics_lines=learning_metrics(score)
        )
    write_run(root, "breakout", 0, mean_return=30.5, metrics_lines=learning_metrics(30.5))
    unfinished = write_run(
        root, "breakout", 1, metrics_lines=learning_metrics(12.0, truncated_tail=True)
    )
    write_run(root, "catch", 0, mean_return=0.8, preset="smoke")
    out = root / "report"
    report_md = build_report([root], out, reps=REPS)
    return {
        "out": out,
        "md": report_md.read_text(),
        "json": json.loads((out / "report.json").read_text()),
        "unfinished": unfinished,
    }


def rows_by_env(summary):
    return {row["env"]: row for row in summary["games"]}


def test_efficientzero_scores_reproduce_published_aggregates(efficientzero_report):
    aggregates = efficientzero_report["aggregates"]
    assert aggregates["num_games"] == 26 and aggregates["seeds_per_game"] == 1
    assert round(aggregates["mean"]["estimate"], 3) == 1.943
    assert round(aggregates["median"]["estimate"], 3) == 1.090
    assert efficientzero_report["missing_games"] == []
    # One seed per game: nothing to resample, so the interval is the point.
    assert aggregates["mean"]["ci_low"] == pytest.approx(aggregates["mean"]["estimate"])


def test_iqm_is_rliables_on_the_same_matrix(efficientzero_report):
    matrix = np.array(
        [[human_normalized(g, anchor(g)["efficientzero"]) for g in ATARI_100K_GAMES]]
    )  # [1 seed, 26 games]
    iqm = efficientzero_report["aggregates"]["iqm"]["estimate"]
    assert iqm == pytest.approx(metrics.aggregate_iqm(matrix))
    published = efficientzero_report["aggregates"]["published"]
    assert published["efficientzero"]["iqm"] == pytest.approx(iqm)


def test_published_columns_reproduce_their_sources_aggregates(efficientzero_report):
    # Mean / median HNS over the 26 games as the anchors' sources give them.
    published = efficientzero_report["aggregates"]["published"]
    expected = {"drq_eps": (0.465, 0.312), "spr": (0.616, 0.396), "bbf": (2.238, 0.879)}
    for method, (mean, median) in expected.items():
        assert round(published[method]["mean"], 3) == mean, method
        assert round(published[method]["median"], 3) == median, method


def test_known_returns_give_known_hns(partial_sweep):
    pong = rows_by_env(partial_sweep["json"])["pong"]
    assert pong["seeds"] == [0, 1, 2] and pong["returns"] == [-3.05, 0.0, 5.0]
    assert pong["mean_return"] == pytest.approx(0.65)
    assert pong["std_return"] == pytest.approx(np.std([-3.05, 0.0, 5.0], ddof=1))
    assert pong["hns"] == pytest.approx((0.65 + 20.7) / 35.3)
    assert (pong["beats_random"], pong["beats_human"], pong["beats_efficientzero"]) == (
        True,
        False,
        False,
    )
    assert -3.05 <= pong["ci_low"] < 0.65 < pong["ci_high"] <= 5.0
    breakout = rows_by_env(partial_sweep["json"])["breakout"]
    assert breakout["num_seeds"] == 1 and breakout["std_return"] is None
    assert breakout["ci_low"] is None and breakout["beats_random"]
    assert breakout["hns"] == pytest.approx(1.0)


def test_a_mean_above_random_with_its_ci_across_it_does_not_beat_random(tmp_path):
    for seed, score in enumerate([-5.0, 10.0]):  # Boxing's random play scores 0.1
        write_run(tmp_path, "boxing", seed, mean_return=score)
    build_report([tmp_path], tmp_path / "report", reps=REPS)
    summary = json.loads((tmp_path / "report" / "report.json").read_text())
    boxing = rows_by_env(summary)["boxing"]
    assert boxing["mean_return"] == 2.5 > boxing["random"]
    assert boxing["ci_low"] < boxing["random"] and boxing["beats_random"] is False
    assert "| Boxing | 2 | 100,000 | 2.5 ± 10.6 | [-5.0, 10.0] |" in (
        tmp_path / "report" / "report.md").read_text()


def test_unequal_seed_counts_use_the_common_minimum(partial_sweep):
    aggregates = partial_sweep["json"]["aggregates"]
    assert aggregates["games"] == ["breakout", "pong"]  # csv order
    assert aggregates["seeds_per_game"] == 1 and aggregates["runs_left_out"] == 2
    # The lowest seed of each game: Pong seed 0 (HNS 0.5) and Breakout (HNS 1.0).
    assert aggregates["mean"]["estimate"] == pytest.approx(0.75)
    assert "lowest 1 seed(s)" in partial_sweep["md"]
    assert "2 finished run(s) are left out" in partial_sweep["md"]
    # Published methods sit beside the runs, per game and in the aggregates.
    assert "| DrQ(ε) | SPR | EfficientZero | BBF | > Random | > Human |" in partial_sweep["md"]
    assert "| DrQ(ε) (published) | SPR (published) |" in partial_sweep["md"]


def test_missing_games_and_unfinished_runs_are_listed(partial_sweep):
    md, summary = partial_sweep["md"], partial_sweep["json"]
    assert "without a finished run (24 of 26)" in md
    assert "Alien" in md and "UpNDown" in md
    assert len(summary["missing_games"]) == 24 and "pong" not in summary["missing_games"]
    assert str(partial_sweep["unfinished"]) in md
    [unfinished] = summary["unfinished_runs"]
    assert unfinished["seed"] == 1 and unfinished["env_steps"] == 100_000  # truncated line skipped


def test_non_atari_run_has_no_hns_and_stays_out_of_aggregates(partial_sweep):
    catch = rows_by_env(partial_sweep["json"])["catch"]
    assert catch["atari"] is False and catch["mean_return"] == 0.8
    assert catch["hns"] is None and catch["efficientzero"] is None
    assert "catch" not in partial_sweep["json"]["aggregates"]["games"]
    assert "## Other environments" in partial_sweep["md"]
    assert "| catch | 1 |" in partial_sweep["md"]


def test_csv_holds_the_games_and_the_aggregates(partial_sweep):
    lines = (partial_sweep["out"] / "report.csv").read_text().splitlines()
    assert lines[0].startswith("kind,env,name,num_seeds,mean_return")
    assert [line.split(",")[:2] for line in lines[1:]] == [
        ["game", "breakout"],
        ["game", "pong"],
        ["game", "catch"],
        ["aggregate", "mean"],
        ["aggregate", "median"],
        ["aggregate", "iqm"],
    ]


def test_plots_are_written_and_referenced(partial_sweep):
    for name in ("performance_profile.png", "learning_curves.png"):
        data = (partial_sweep["out"] / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
        assert f"]({name})" in partial_sweep["md"]


def test_bootstrap_is_reproducible(tmp_path):
    root = tmp_path / "runs"
    for seed, score in enumerate([5.0, 9.0, 14.0]):
        write_run(root, "pong", seed, mean_return=score)
        write_run(root, "boxing", seed, mean_return=score)
    first = build_report([root], tmp_path / "a", reps=REPS)
    second = build_report([root], tmp_path / "b", reps=REPS)
    a = json.loads((first.parent / "report.json").read_text())["aggregates"]
    b = json.loads((second.parent / "report.json").read_text())["aggregates"]
    assert a == b
    assert a["iqm"]["ci_low"] < a["iqm"]["estimate"] < a["iqm"]["ci_high"]


def test_score_distribution_matches_rliable():
    from rliable import library

    from agent.report import _PROFILE_TAUS

    scores = np.random.default_rng(0).gamma(1.0, 1.0, size=(3, 7))
    np.testing.assert_allclose(
        score_distribution(scores), library.score_distributions(scores, _PROFILE_TAUS)
    )


def test_resumed_run_logs_replace_the_rewound_stretch(tmp_path):
    # Logged up to 3000 steps, then resumed from a checkpoint at 2000.
    steps_and_returns = [(1000, 1.0), (2000, 2.0), (3000, 3.0), (2500, 5.0), (3500, 6.0)]
    lines = [json.dumps({"env_steps": s, "episode_return": r}) for s, r in steps_and_returns]
    run = load_run(write_run(tmp_path, "pong", 0, metrics_lines=lines))
    np.testing.assert_array_equal(run.train.steps, [1000, 2000, 2500, 3500])
    np.testing.assert_array_equal(run.train.returns, [1.0, 2.0, 5.0, 6.0])
    assert run.evals.steps.shape == (0,) and run.final is None


def test_no_runs_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run directories"):
        build_report([tmp_path], tmp_path / "report")
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        build_report([tmp_path / "typo"], tmp_path / "report")
