"""scripts/ladder.py's statistics, solve rules and tables, and examples/grid_env.py's rules."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
REPS = 200  # enough for the checks here, and fast


def load_script():
    spec = importlib.util.spec_from_file_location("ladder", ROOT / "scripts" / "ladder.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ladder"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


ladder = load_script()


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


grid_env, corridor_env = load_example("grid_env"), load_example("corridor_env")

TASKS = {task.name: task for task in ladder.TASKS}


# The grid


def cells(obs):
    """(agent, goal) cells as read off a frame."""
    grid = obs[::8, ::8]  # [6, 6, 3] one pixel a cell
    return (tuple(np.argwhere((grid == colour).all(axis=-1))[0])
            for colour in (grid_env.AGENT, grid_env.GOAL))


def test_grid_frames_and_start_cells():
    env = grid_env.Grid()
    starts = set()
    for seed in range(200):
        obs, _ = env.reset(seed=seed)
        assert obs.shape == (48, 48, 3) and obs.dtype == np.uint8
        grid = obs[::8, ::8]
        assert (obs == grid.repeat(8, axis=0).repeat(8, axis=1)).all()  # 8 x 8 cells
        assert (grid == grid_env.FLOOR).all(axis=-1).sum() == 34  # agent and goal distinct
        starts.add(tuple(cells(obs)))
    assert len(starts) > 150  # random starts
    assert np.array_equal(env.reset(seed=3)[0], env.reset(seed=3)[0])


def test_large_grid_is_the_grid_drawn_twice_as_large():
    small, large = grid_env.Grid(), grid_env.LargeGrid()
    obs, large_obs = small.reset(seed=5)[0], large.reset(seed=5)[0]
    assert large_obs.shape == (96, 96, 3)
    assert (large_obs == obs.repeat(2, axis=0).repeat(2, axis=1)).all()
    for action in (1, 4, 4, 2, 0, 3):
        obs, reward, terminated, truncated, _ = small.step(action)
        large_obs, *rest = large.step(action)
        assert (large_obs == obs.repeat(2, axis=0).repeat(2, axis=1)).all()
        assert rest[:3] == [reward, terminated, truncated]


def test_grid_moves_and_stay():
    env = grid_env.Grid()
    moves = {0: (0, 0), 1: (-1, 0), 2: (1, 0), 3: (0, -1), 4: (0, 1)}
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    for _ in range(500):
        action = int(rng.integers(5))
        agent, goal = cells(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        expected = tuple(np.clip(np.add(agent, moves[action]), 0, 5))
        if terminated or truncated:
            assert terminated == (expected == goal)
            obs, _ = env.reset()
            continue
        assert tuple(cells(obs)) == (expected, goal) and reward == -0.02


def test_grid_reward_and_termination_at_goal():
    env = grid_env.Grid()
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        agent, goal = cells(obs)
        # Rows first, then columns: the shortest path.
        path = ([2 if goal[0] > agent[0] else 1] * abs(goal[0] - agent[0])
                + [4 if goal[1] > agent[1] else 3] * abs(goal[1] - agent[1]))
        steps = [env.step(action)[1:4] for action in path]
        assert steps == [(-0.02, False, False)] * (len(path) - 1) + [(1.0, True, False)]
        episode_return = sum(reward for reward, _, _ in steps)
        assert episode_return == pytest.approx(1 - 0.02 * (len(path) - 1))
        assert ladder.reached_goal(episode_return)


def test_grid_truncates_after_30_steps():
    env = grid_env.Grid()
    env.reset(seed=0)
    steps = [env.step(0)[1:4] for _ in range(30)]  # stay: never on the goal
    assert steps == [(-0.02, False, False)] * 29 + [(-0.02, False, True)]
    episode_return = np.sum(np.float32([reward for reward, _, _ in steps]))
    assert episode_return == pytest.approx(-0.6, abs=1e-5)
    assert not ladder.reached_goal(episode_return)


def test_grid_reached_goal_separates_every_possible_return():
    reached = [1 - 0.02 * (k - 1) for k in range(1, 31)]  # the goal on step k
    missed = np.cumsum(np.full(30, -0.02, np.float32))  # no goal in 1..30 steps
    assert all(ladder.reached_goal(np.float32(r)) for r in reached)
    assert not any(ladder.reached_goal(r) for r in missed)


def exact_random_return() -> float:
    """The uniform random policy's expected return, over the Markov chain of the agent's cell."""
    moves = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]
    step = np.zeros((36, 36))  # [from, to] cell transition probabilities
    for row in range(6):
        for col in range(6):
            for dr, dc in moves:
                to = min(max(row + dr, 0), 5) * 6 + min(max(col + dc, 0), 5)
                step[row * 6 + col, to] += 1 / len(moves)
    total = 0.0
    for goal in range(36):
        where = np.delete(np.eye(36), goal, axis=0)  # [35 starts, 36 cells] agent's cell
        for k in range(1, 31):
            where = where @ step
            total += where[:, goal].sum() * (1 - 0.02 * (k - 1))  # reached on step k
            where[:, goal] = 0
        total += where.sum() * -0.6  # never reached
    return total / (36 * 35)


def test_grid_random_policy_return():
    exact = exact_random_return()
    assert round(exact, 3) == grid_env.RANDOM_RETURN == -0.205
    env = grid_env.Grid()
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    returns = []
    while len(returns) < 2000:
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(int(rng.integers(5)))
            total, done = total + reward, terminated or truncated
        returns.append(total)
        env.reset()
    # Seeded, so it cannot flake; within 5 standard errors (0.07) of the exact value.
    assert abs(np.mean(returns) - exact) < 5 * np.std(returns) / np.sqrt(len(returns))


# Solve rules and statistics


def test_grid_solve_rule():
    task = TASKS["grid"]
    returns = [0.9] * 13 + [-0.6] * 3  # 13 of 16 = 81% reached the goal
    assert ladder.goal_fraction(returns) == pytest.approx(13 / 16)
    assert ladder.seed_solved(task, returns, random_mean=-0.2)
    assert not ladder.seed_solved(task, [0.9] * 12 + [-0.6] * 4, random_mean=-0.2)  # 75%
    # The fraction of episodes counts, not the mean return.
    assert ladder.seed_solved(task, [0.42] * 13 + [-0.6] * 3, random_mean=-0.2)


def test_return_and_above_random_rules():
    assert ladder.seed_solved(TASKS["catch"], [8.0, 8.0], random_mean=-8)
    assert not ladder.seed_solved(TASKS["catch"], [10.0, 5.0], random_mean=-8)
    breakout = TASKS["minatar-breakout"]
    assert ladder.seed_solved(breakout, [1.0, 0.0], random_mean=0.3)
    assert not ladder.seed_solved(breakout, [0.0, 0.5], random_mean=0.3)


def write_eval(runs_dir, task, seed, returns, wall=None, curve=()):
    """A finished run: eval.json, and a metrics.jsonl holding the periodic evaluations
    `curve` [(env steps, mean return)] between lines without one."""
    run = ladder.run_dir(runs_dir, task, seed)
    run.mkdir(parents=True)
    final = {"env_steps": task.env_steps, "returns": returns, "mean_return": np.mean(returns)}
    (run / "eval.json").write_text(json.dumps(final))
    if wall is not None:
        (run / ladder.WALL_FILE).write_text(json.dumps({"seconds": wall}))
    lines = [{"env_steps": 1, "loss/total": 1.0}]
    lines += [{"env_steps": steps, "loss/total": 0.5, "eval/mean_return": value}
              for steps, value in curve]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_summary_from_eval_files(tmp_path):
    task = TASKS["catch"]
    for seed, (value, wall) in enumerate([(10.0, 60), (9.0, 120), (-8.0, None), (8.0, 90)]):
        write_eval(tmp_path, task, seed, [value, value], wall)
    seeds = ladder.load_seeds(tmp_path, task, [0, 1, 2, 3, 4])  # seed 4 has no eval.json
    assert [s.seed for s in seeds] == [0, 1, 2, 3]
    summary = ladder.summarize(task, seeds, 5, random=[-8.0] * 10, reps=REPS)
    assert summary.mean.value == pytest.approx(4.75)
    assert summary.iqm.value == pytest.approx(8.5)  # mean of the middle two of four
    assert -8.0 <= summary.mean.low <= summary.mean.value <= summary.mean.high <= 10.0
    assert ladder.task_solved(summary) is None
    row = ladder.task_table([summary])[2]
    for fragment in ["catch (`catch`)", "8,000", "| 4/5 |", "4.75 [", "| −8.00 |",
                     "mean return ≥ 8", "| 3/4 |", "| — |", "1 m 30 s", "4 m 30 s"]:
        assert fragment in row
    seed_rows = ladder.seed_table([summary])
    assert len(seed_rows) == 2 + 4
    assert "| catch | 2 | −8.00 | ✗ | −8.00 (8,000) |  |  | — |" in seed_rows


def test_late_drops_compare_the_final_return_with_the_seeds_best(tmp_path):
    """A seed that learnt catch by 4k and ends below its best by more than the margin (3)
    is a late drop; one that ends within the margin, or never learnt it, is not."""
    task = TASKS["catch"]
    curves = {0: [(2_000, 2.0), (4_000, 10.0), (6_000, 9.0)],  # final 5: dropped by 5
              1: [(2_000, 2.0), (4_000, 10.0), (6_000, 9.0)],  # final 8: within 3
              2: [(2_000, -8.0), (4_000, -9.0)]}  # final -8: never learnt
    for seed, final in [(0, 5.0), (1, 8.0), (2, -8.0)]:
        write_eval(tmp_path, task, seed, [final], curve=curves[seed])
    seeds = ladder.load_seeds(tmp_path, task, [0, 1, 2])
    assert seeds[0].curve == ((2_000, 2.0), (4_000, 10.0), (6_000, 9.0))
    assert [ladder.late_drop(task, s) for s in seeds] == [True, False, False]
    assert ladder.best_evaluation(seeds[0]) == (4_000, 10.0)
    assert ladder.best_evaluation(seeds[2]) == (8_000, -8.0)  # the final one, latest of equals
    summary = ladder.summarize(task, seeds, 3, random=[-8.0] * 10, reps=REPS)
    assert "| 1/3 (margin 3.00) |" in ladder.task_table([summary])[2]
    rows = ladder.seed_table([summary])
    assert "| catch | 0 | 5.00 | ✗ | 10.00 (4,000) | ✗ | 2.00, 10.00, 9.00 |" in rows[2]
    assert "| catch | 1 | 8.00 | ✓ | 10.00 (4,000) | — |" in rows[3]


# The corridor


def test_corridor_pays_at_the_far_end_and_truncates_loops():
    env = corridor_env.Corridor()
    obs, _ = env.reset(seed=0)
    assert obs.shape == (11,) and obs.dtype == np.float32 and obs[0] == 1 and obs.sum() == 1
    obs, reward, terminated, truncated, _ = env.step(0)  # left at cell 0 stays
    assert obs[0] == 1 and reward == pytest.approx(-0.01) and not (terminated or truncated)
    total = reward
    for _ in range(10):
        obs, reward, terminated, truncated, _ = env.step(1)
        total += reward
    assert terminated and not truncated and obs[10] == 1
    assert total - (-0.01) == pytest.approx(corridor_env.OPTIMAL_RETURN)  # 10 steps right
    env.reset()
    total, done, steps = 0.0, False, 0
    while not done:  # the loop a greedy policy can fall into
        _, reward, terminated, truncated, _ = env.step(steps % 2)
        total, done, steps = total + reward, terminated or truncated, steps + 1
    assert truncated and steps == 40 and total == pytest.approx(-0.40)


def test_above_random_verdict_uses_the_ci(tmp_path):
    task = TASKS["minatar-breakout"]
    random = [0.3] * 100
    for seed, value in enumerate([2.0, 3.0, 2.5, 4.0, 3.5]):
        write_eval(tmp_path / "good", task, seed, [value])
    for seed, value in enumerate([5.0, 0.0, 0.0, 0.0, 0.0]):
        write_eval(tmp_path / "lucky", task, seed, [value])
    good, lucky = (
        ladder.summarize(task, ladder.load_seeds(tmp_path / name, task, range(5)), 5, random,
                         reps=REPS)
        for name in ("good", "lucky"))
    assert ladder.task_solved(good) and "yes (5/5 seeds above random)" in ladder._solved(good)
    # Its mean (1.0) is above random, but not the lower end of its CI.
    assert lucky.mean.value > 0.3 and not ladder.task_solved(lucky)
    assert "no (1/5 seeds above random)" in ladder._solved(lucky)


def test_markdown_sections_append(tmp_path):
    task = TASKS["grid"]
    write_eval(tmp_path, task, 0, [0.9] * 13 + [-0.6] * 3, wall=300)
    summary = ladder.summarize(task, ladder.load_seeds(tmp_path, task, [0]), 1,
                               random=[-0.6] * 7 + [0.5] * 3, reps=REPS)
    header = {"command": "python scripts/ladder.py --tasks grid", "date": "2025-01-01 12:00",
              "commit": "`abc1234`", "cpu": "Some CPU, 2 logical cores", "wall": "5 m 00 s"}
    out = tmp_path / "ladder.md"
    for label in ("before", "after"):
        section = ladder.render_section([summary], label=label, header=header,
                                        extra=["--search.kind", "gumbel"], reps=REPS)
        ladder.write_markdown(out, section, append=True)
    text = out.read_text()
    assert text.count("# The ladder on CPU") == 1
    assert "## before (2025-01-01 12:00)" in text and "## after (2025-01-01 12:00)" in text
    for fragment in ["--log.eval-interval N/10 --search.kind gumbel", "Some CPU", "`abc1234`",
                     "0.62 (81% goal)", "−0.27 (30% goal)", "≥ 80% of episodes reach the goal",
                     "| 1/1 |"]:
        assert fragment in text
    ladder.write_markdown(out, section, append=False)
    assert out.read_text().count("## ") == 1


def test_random_returns_of_catch():
    returns = ladder.random_returns(TASKS["catch"], [], episodes=12)
    assert len(returns) == 12 and all(-10 <= r <= 10 for r in returns)


def test_options():
    args, extra = ladder.parse_args(["--quick", "--jobs", "1", "--", "--search.kind", "gumbel"])
    assert args.quick and args.jobs == 1 and args.tasks is None
    assert extra == ["--search.kind", "gumbel"]
    args = ladder.train_args(TASKS["cartpole"], 3, Path("runs/x"), ["--a", "1"])
    assert args == ["--env", "CartPole-v1", "--env-steps", "10000", "--seed", "3",
                    "--logdir", "runs/x", "--log.progress", "False",
                    "--log.eval-interval", "1000", "--a", "1"]
    args = ladder.train_args(TASKS["catch-conv"], 0, Path("runs/x"), ["--a", "1"])
    assert args[-4:] == ["--model.max-flat-image", "0", "--a", "1"]  # the task's, then extras


def test_script_reuses_finished_runs_and_writes_the_table(tmp_path):
    """The script end to end at toy size: its one run already has an eval.json, so nothing
    trains; it measures the random policy, bootstraps and writes the Markdown."""
    write_eval(tmp_path / "runs", TASKS["catch"], 0, [10.0, 8.0], wall=60)
    out = tmp_path / "ladder.md"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ladder.py"), "--tasks", "catch", "--seeds", "0",
         "--runs-dir", str(tmp_path / "runs"), "--out", str(out), "--random-episodes", "2"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {out}" in done.stdout
    text = out.read_text()
    assert "catch (`catch`)" in text and "0 runs trained 2 at a time and 1 reused" in text
