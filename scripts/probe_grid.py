"""What a grid run's model knows, on every board: does its value grow towards the goal,
and does a one-step lookahead move closer?

    .venv/bin/python scripts/probe_grid.py RUN_DIR [RUN_DIR ...]

For every board (agent and goal on two distinct cells of examples/grid_env.py's 6 x 6
grid; 1,260 boards) the probe runs the run's newest checkpoint once, without search:

- the mean value at each Manhattan distance 1..10 from the goal;
- how the value spreads with where the goal is and with where the agent is: the standard
  deviation over cells of the mean value of the boards with the goal (agent) on that cell.
  The true value depends on the two only through their distance, so both are small (0.02
  for the optimal policy's value);
- how often the policy prior's favourite move and the one-step lookahead
  argmax_a r(s, a) + discount * v(g(s, a)) bring the agent closer to the goal;
- on the boards one move from the goal, the predicted reward of that move (the env pays
  +1) and of the other four (-0.02): whether the model knows where a reward is.
"""

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import grid_env  # noqa: E402

from agent import evaluate  # noqa: E402
from world_model import initial_inference, recurrent_inference  # noqa: E402

SIZE = grid_env.SIZE


def boards() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames [1260, 48, 48, 3], agent cells [1260, 2], goal cells [1260, 2]."""
    env = grid_env.Grid()
    frames, agents, goals = [], [], []
    for agent in range(SIZE * SIZE):
        for goal in range(SIZE * SIZE):
            if agent != goal:
                env._agent, env._goal = np.array(divmod(agent, SIZE)), np.array(divmod(goal, SIZE))
                frames.append(env.render())
                agents.append(env._agent)
                goals.append(env._goal)
    return np.stack(frames), np.stack(agents), np.stack(goals)


def cells_after(agents: np.ndarray) -> np.ndarray:
    """Agent cells [N, 2] -> the cell each of the 5 moves leads to, [N, 5, 2]."""
    return np.clip(agents[:, None] + grid_env.MOVES[None], 0, SIZE - 1)


def supervised_step(loss_fn, optimizer: optax.GradientTransformation):
    """The supervised probes' jitted update: (params, opt_state, batch) -> the next two."""

    @jax.jit
    def step(params, opt_state, batch):
        grads = jax.grad(loss_fn)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return step


def probe(run_dir: Path) -> dict:
    cfg, graphdef, params = evaluate.load_run(run_dir)[:3]
    frames, agents, goals = boards()
    distance = np.abs(agents - goals).sum(1)  # [1260]
    out = initial_inference(graphdef, params, jnp.asarray(frames))
    value = np.asarray(out.value)
    steps = [recurrent_inference(graphdef, params, out.state, jnp.full(len(frames), a))
             for a in range(len(grid_env.MOVES))]
    rewards = np.stack([np.asarray(s.reward) for s in steps], 1)  # [1260, 5]
    values = np.stack([np.asarray(s.value) for s in steps], 1)  # [1260, 5]
    lookahead = rewards + cfg.train.discount * values  # [1260, 5]
    after = cells_after(agents)  # [1260, 5, 2]
    arrives = (after == goals[:, None]).all(-1)  # [1260, 5]

    def closer(moves: np.ndarray) -> float:
        moved = after[np.arange(len(moves)), moves]  # [1260, 2]
        return float((np.abs(moved - goals).sum(1) < distance).mean())

    goal_cells, agent_cells = goals @ [SIZE, 1], agents @ [SIZE, 1]  # [1260] cell indices
    return {
        "value_by_distance": [value[distance == d].mean() for d in range(1, 2 * SIZE - 1)],
        "spread_by_goal": np.std([value[goal_cells == c].mean() for c in range(SIZE * SIZE)]),
        "spread_by_agent": np.std([value[agent_cells == c].mean() for c in range(SIZE * SIZE)]),
        "prior_closer": closer(np.asarray(out.policy_logits).argmax(1)),
        "lookahead_closer": closer(lookahead.argmax(1)),
        "arrival_reward": rewards[arrives].mean(),
        "other_reward": rewards[(distance == 1)[:, None] & ~arrives].mean(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    print("| run | value at distance 1, 2, …, 10 | spread by goal cell | by agent cell "
          "| prior closer | lookahead closer | reward of the arriving move | of the others |")
    print("|---|---|--:|--:|--:|--:|--:|--:|")
    for run in args.runs:
        p = probe(run)
        values = ", ".join(f"{v:.2f}" for v in p["value_by_distance"])
        print(f"| {run} | {values} | {p['spread_by_goal']:.2f} | {p['spread_by_agent']:.2f} "
              f"| {p['prior_closer']:.2f} | {p['lookahead_closer']:.2f} "
              f"| {p['arrival_reward']:.2f} | {p['other_reward']:.2f} |")


if __name__ == "__main__":
    main()
