"""What a catch run's model knows, on every board: does its value tell a ball that can
still be caught from a lost one, and does it pick the move that keeps the ball?

    .venv/bin/python scripts/probe_catch.py RUN_DIR [RUN_DIR ...]

For every board (ball row 0..8 and column, paddle column; 900 boards) the probe runs the
run's newest checkpoint once, without search:

- value gap: mean value of boards whose ball is still reachable (|ball - paddle| <= moves
  left) minus that of boards whose ball is lost;
- on the critical boards (|ball - paddle| == moves left > 0: only moving towards the ball
  keeps it), how often the policy prior's favourite and the one-step lookahead
  argmax_a r(s, a) + discount * v(g(s, a)) are that move, and the lookahead's mean margin
  of that move over the best other one;
- the reward error on landing steps (|predicted - true| for all three moves), and the mean
  predicted reward of the landing moves that catch the ball (true +1) and that miss it
  (true -1).
"""

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from agent import evaluate
from agent.envs.catch import COLS, ROWS
from world_model import initial_inference, recurrent_inference


def boards() -> tuple[np.ndarray, np.ndarray]:
    """Every board with the ball in rows 0..ROWS-2: frames [900, 10, 10, 1], (row, ball, paddle)."""
    frames, where = [], []
    for row in range(ROWS - 1):
        for ball in range(COLS):
            for paddle in range(COLS):
                frame = np.zeros((ROWS, COLS, 1), np.uint8)
                frame[ROWS - 1, paddle], frame[row, ball] = 128, 255
                frames.append(frame)
                where.append((row, ball, paddle))
    return np.stack(frames), np.array(where)


def probe(run_dir: Path) -> dict:
    cfg, graphdef, params = evaluate.load_run(run_dir)[:3]
    if cfg.env.name != "catch" or cfg.env.frame_stack != 1:
        raise SystemExit(f"{run_dir}: the probe reads catch runs with --env.frame-stack 1")
    frames, where = boards()
    row, ball, paddle = where.T
    out = initial_inference(graphdef, params, jnp.asarray(frames))
    value, prior = np.asarray(out.value), np.asarray(jax.nn.softmax(out.policy_logits))
    offset, moves_left = ball - paddle, ROWS - 1 - row
    reachable = np.abs(offset) <= moves_left
    steps = [recurrent_inference(graphdef, params, out.state, jnp.full(len(frames), a))
             for a in range(3)]
    rewards = np.stack([np.asarray(s.reward) for s in steps], 1)  # [900, 3]
    lookahead = rewards + cfg.train.discount * np.stack([np.asarray(s.value) for s in steps], 1)
    critical = (np.abs(offset) == moves_left) & (offset != 0)
    toward = np.sign(offset) + 1  # LEFT 0, STAY 1, RIGHT 2
    others = np.where(np.eye(3, dtype=bool)[toward], -np.inf, lookahead)
    landing = row == ROWS - 2
    caught = offset[:, None] == np.arange(3)[None] - 1  # the move lands under the ball
    return {
        "value_gap": value[reachable].mean() - value[~reachable].mean(),
        "prior_accuracy": (prior.argmax(1) == toward)[critical].mean(),
        "lookahead_accuracy": (lookahead.argmax(1) == toward)[critical].mean(),
        "lookahead_margin": (lookahead[critical, toward[critical]]
                             - others[critical].max(1)).mean(),
        "landing_reward_error": np.abs(rewards - np.where(caught, 1.0, -1.0))[landing].mean(),
        "catch_reward": rewards[landing][caught[landing]].mean(),
        "miss_reward": rewards[landing][~caught[landing]].mean(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    print("| run | value gap | prior acc. | lookahead acc. | lookahead margin "
          "| landing reward err. | reward of a catch / a miss |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for run in args.runs:
        p = probe(run)
        print(f"| {run} | {p['value_gap']:.2f} | {p['prior_accuracy']:.2f} | "
              f"{p['lookahead_accuracy']:.2f} | {p['lookahead_margin']:.3f} | "
              f"{p['landing_reward_error']:.3f} | "
              f"{p['catch_reward']:.2f} / {p['miss_reward']:.2f} |")


if __name__ == "__main__":
    main()
