"""How a run's final greedy policy loses its episodes, and what its values say there.

    .venv/bin/python scripts/probe_failures.py RUN_DIR [RUN_DIR ...] [--episodes 8]
        [--time-limit 500 --edge-dim 0 --edge 2.0]

For vector observations (CartPole-v1: x, x', theta, theta'). From each run's newest
checkpoint:

- greedy episodes as `dreamzero evaluate` plays them; for every lost one (shorter than
  the env's time limit, CartPole-v1's 500 steps by default) its length, its last
  observation, and the search's root value 50 and 10 steps before the end, against the
  discounted steps it had left;
- at those episodes' states, the training-time search's root value, the Q-value of its
  greedy action and the network's value, against the discounted return that followed
  (an episode cut by the time limit goes on: 1 / (1 - discount));
- the replay's terminals, and how many of them had |obs[edge_dim]| > edge (CartPole's
  track ends at |x| = 2.4).
"""

import argparse
from pathlib import Path

import jax
import numpy as np

from agent import checkpoint as checkpoint_lib
from agent.acting import make_act
from agent.evaluate import load_run, run_episodes
from agent.train import build


def discounted_steps(steps, discount: float):
    """The return of `steps` more rewards of 1; `np.inf` steps: 1 / (1 - discount)."""
    return (1 - discount**steps) / (1 - discount)


def lost_episodes(trajectories, discount: float, time_limit: int) -> None:
    for t in trajectories:
        n = len(t.obs)
        if n >= time_limit:
            continue
        before = {k: t.values[n - k] for k in (50, 10) if n >= k}
        left = {k: discounted_steps(k, discount) for k in before}
        values = ", ".join(f"{v:.1f} {k} steps before (true {left[k]:.1f})"
                           for k, v in before.items())
        print(f"  lost after {n} steps, last obs [{', '.join(f'{x:+.2f}' for x in t.obs[-1])}]: "
              f"root value {values}")


def search_values(cfg, graphdef, params, trajectories, discount: float,
                  time_limit: int) -> None:
    obs = np.concatenate([t.obs for t in trajectories])
    # An episode cut by the time limit goes on: every state has an endless return left.
    steps_left = [np.arange(len(t.obs), 0, -1) if len(t.obs) < time_limit
                  else np.full(len(t.obs), np.inf) for t in trajectories]
    act = make_act(graphdef, cfg.search, discount=discount, greedy=False)
    plan = jax.device_get(act(params, jax.random.key(0), obs, 1.0))
    print(f"  at their {len(obs)} states: search root value {plan.root_value.mean():.1f}, "
          f"greedy Q {plan.greedy_value.mean():.1f}, network {plan.network_value.mean():.1f}; "
          f"true {discounted_steps(np.concatenate(steps_left), discount).mean():.1f}")


def replay_terminals(run_dir: Path, cfg, edge_dim: int, edge: float) -> None:
    env, _, _, state, replay = build(cfg)
    env.close()
    checkpointer = checkpoint_lib.Checkpointer(run_dir, read_only=True)
    state, replay, _ = checkpointer.restore(state=state, replay=replay)
    checkpointer.close()
    columns = min(int(replay.written), replay.length)
    frames = np.asarray(replay.frames[:, :columns])  # [N, T, D]
    terminal = np.asarray(replay.terminals[:, :columns])
    at_edge = terminal & (np.abs(frames[..., edge_dim]) > edge)
    print(f"  replay: {terminal.sum()} terminals, {at_edge.sum()} with "
          f"|obs[{edge_dim}]| > {edge}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--time-limit", type=int, default=500)
    parser.add_argument("--edge-dim", type=int, default=0)
    parser.add_argument("--edge", type=float, default=2.0)
    args = parser.parse_args()
    for run_dir in args.run_dirs:
        cfg, graphdef, params, env_steps, env_kwargs = load_run(run_dir)
        discount = cfg.train.discount
        played = run_episodes(cfg, graphdef, params, env_kwargs, episodes=args.episodes,
                              seed=1_000, record_steps=100_000)
        print(f"{run_dir} ({cfg.search.kind} x {cfg.search.num_simulations}, "
              f"{env_steps} env steps): returns {[round(r, 1) for r in played.returns]}")
        lost_episodes(played.trajectories, discount, args.time_limit)
        search_values(cfg, graphdef, params, played.trajectories, discount, args.time_limit)
        replay_terminals(run_dir, cfg, args.edge_dim, args.edge)


if __name__ == "__main__":
    main()
