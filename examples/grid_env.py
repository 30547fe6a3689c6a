"""Grid: walk to the goal on a small pixel grid; the navigation rung of scripts/ladder.py.

    dreamzero check-env examples/grid_env.py:Grid
    dreamzero train --env examples/grid_env.py:Grid
    dreamzero train --env examples/grid_env.py:LargeGrid   # the conv rung


Rules: a 6 x 6 grid. Each episode the agent and the goal start on two distinct cells drawn
uniformly at random. Actions 0 stay, 1 up, 2 down, 3 left, 4 right; a move into the edge
leaves the agent where it is. A step that lands on the goal pays +1 and terminates the
episode; every other step pays -0.02. Episodes are truncated after 30 steps.

Frames are (48, 48, 3) uint8 RGB, 8 x 8 pixels a cell: floor, agent and goal in three
distinct colours. LargeGrid is the same game drawn 16 x 16 pixels a cell, (96, 96, 3) as
an Atari frame is: 27,648 values, over the default preset's `model.max_flat_image`, so
its frames go through the conv representation where Grid's 6,912 go through keypoints.

Reading success from returns: reaching the goal on step k (1 <= k <= 30) returns
1 - 0.02 (k - 1) >= 0.42, and an episode that never reaches it returns -0.02 per step played,
so -0.6 at the 30-step truncation and below 0 under any shorter cap. Hence an episode
reached the goal iff its return is > 0 (scripts/ladder.py's `reached_goal`), with a margin
of 0.42 either way that no float rounding can cross.

RANDOM_RETURN = -0.205: the uniform random policy's expected return (-0.2048, computed exactly
over the Markov chain of agent and goal cells); it reaches the goal in 29.2% of episodes.
OPTIMAL_RETURN = 0.94: the shortest path has the Manhattan distance d, whose mean over two
distinct uniform cells of a 6 x 6 grid is exactly 4, and pays 1 - 0.02 (d - 1).
"""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium import spaces

SIZE = 6
CELL = 8
MAX_STEPS = 30
GOAL_REWARD = 1.0
STEP_REWARD = -0.02
RANDOM_RETURN = -0.205
OPTIMAL_RETURN = 0.94
# Colours (RGB) of the empty floor, the agent and the goal.
FLOOR = (20, 20, 40)
AGENT = (80, 160, 255)
GOAL = (255, 200, 0)
MOVES = np.array([(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)])  # stay, up, down, left, right


class Grid(gymnasium.Env):
    """Walk to the goal: +1 and the end on arrival, -0.02 a step, at most 30 steps."""

    metadata = {"render_modes": ["rgb_array"]}

    cell = CELL  # pixels a side of a cell

    def __init__(self, render_mode: str | None = None):
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(len(MOVES))
        side = SIZE * self.cell
        self.observation_space = spaces.Box(0, 255, (side, side, 3), np.uint8)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)  # seeds self.np_random: same seed, same episodes
        agent, goal = self.np_random.choice(SIZE * SIZE, size=2, replace=False)
        self._agent = np.array(divmod(agent, SIZE))  # [2] row, column
        self._goal = np.array(divmod(goal, SIZE))  # [2] row, column
        self._steps = 0
        return self._image(), {}

    def step(self, action: int):
        self._agent = np.clip(self._agent + MOVES[action], 0, SIZE - 1)
        self._steps += 1
        terminated = bool((self._agent == self._goal).all())
        reward = GOAL_REWARD if terminated else STEP_REWARD
        truncated = not terminated and self._steps >= MAX_STEPS
        return self._image(), reward, terminated, truncated, {}

    def render(self) -> np.ndarray:
        return self._image()

    def _image(self) -> np.ndarray:
        grid = np.empty((SIZE, SIZE, 3), np.uint8)  # [SIZE, SIZE, 3] one pixel a cell
        grid[:] = FLOOR
        grid[tuple(self._goal)] = GOAL
        grid[tuple(self._agent)] = AGENT
        return grid.repeat(self.cell, axis=0).repeat(self.cell, axis=1)  # [48, 48, 3] uint8


class LargeGrid(Grid):
    """Grid drawn 16 x 16 pixels a cell: (96, 96, 3) frames, the size of an Atari frame."""

    cell = 2 * CELL


if __name__ == "__main__":
    from gymnasium.utils.env_checker import check_env

    env = Grid()
    check_env(env, skip_render_check=True)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    returns = []
    while len(returns) < 1000:
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(int(rng.integers(len(MOVES))))
            total, done = total + reward, terminated or truncated
        returns.append(total)
        env.reset()
    print(f"Grid: random policy mean return {np.mean(returns):.3f} over 1000 episodes, "
          f"{np.mean(np.array(returns) > 0):.0%} reached the goal")
