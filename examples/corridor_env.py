"""Corridor: walk to the far end of a line; the sparse-reward vector rung of scripts/ladder.py.

    dreamzero check-env examples/corridor_env.py:Corridor
    dreamzero train --env examples/corridor_env.py:Corridor --env-steps 5000

Rules: cells 0..10 on a line; each episode starts at cell 0. Actions 0 left, 1 right; a
move left from cell 0 stays there. Every step pays -0.01, and the step that lands on cell
10 pays +1 more and terminates the episode. Episodes are truncated after 40 steps.

Observations: the position as a one-hot float32 vector of 11 values.

The only reward worth having is at the end, and a greedy policy that loops (left, right,
left, ...) never arrives: it times out at -0.40, where the shortest path returns
OPTIMAL_RETURN = 0.90 (10 steps right). An episode arrived iff its return is > 0.

RANDOM_RETURN = -0.18: the uniform random policy's mean return over 10,000 episodes
(`python examples/corridor_env.py`); it arrives in 19.8% of episodes.
"""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium import spaces

LENGTH = 10
MAX_STEPS = 40
STEP_REWARD = -0.01
GOAL_REWARD = 1.0
RANDOM_RETURN = -0.18
OPTIMAL_RETURN = 0.90


class Corridor(gymnasium.Env):
    """Walk right to cell 10: +1 and the end on arrival, -0.01 a step, at most 40 steps."""

    def __init__(self):
        self.action_space = spaces.Discrete(2)
        self.observation_space = spaces.Box(0.0, 1.0, (LENGTH + 1,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._position, self._steps = 0, 0
        return self._observation(), {}

    def step(self, action: int):
        self._position = max(0, self._position + (1 if action == 1 else -1))
        self._steps += 1
        terminated = self._position == LENGTH
        reward = STEP_REWARD + (GOAL_REWARD if terminated else 0.0)
        truncated = not terminated and self._steps >= MAX_STEPS
        return self._observation(), reward, terminated, truncated, {}

    def _observation(self) -> np.ndarray:
        return np.eye(LENGTH + 1, dtype=np.float32)[self._position]  # [11] one-hot


if __name__ == "__main__":
    from gymnasium.utils.env_checker import check_env

    env = Corridor()
    check_env(env)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    returns = []
    while len(returns) < 10_000:
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(int(rng.integers(2)))
            total, done = total + reward, terminated or truncated
        returns.append(total)
        env.reset()
    print(f"Corridor: random policy mean return {np.mean(returns):.3f} over 10000 episodes, "
          f"{np.mean(np.array(returns) > 0):.1%} arrived")
