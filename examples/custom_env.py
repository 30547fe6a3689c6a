"""A custom pixel environment for dreamzero: copy this file and change the game.

dreamzero takes any gymnasium.Env with Discrete actions and either uint8 image
observations (H, W, C) / (H, W) or flat vectors (F,). Point it at a class or at a
function that returns an env:

    dreamzero check-env examples.custom_env:GridTreasure
    dreamzero check-env examples.custom_env:make_small_grid_treasure
    dreamzero check-env path/to/custom_env.py:GridTreasure

Run this file to check the env with gymnasium's own checker and play it randomly:

    python examples/custom_env.py
"""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium import spaces

# Colours (RGB) of the empty floor, the walker and the treasure.
FLOOR = (20, 20, 40)
WALKER = (80, 160, 255)
TREASURE = (255, 200, 0)
MOVES = np.array([(-1, 0), (1, 0), (0, -1), (0, 1)])  # up, down, left, right


class GridTreasure(gymnasium.Env):
    """Walk a grid to pick up treasures: +1 each, a new one appears at once.

    The episode ends (terminated) after `treasures` pickups, or is truncated after
    `max_steps` steps. Observations are RGB images of the grid, `cell` pixels per cell.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, *, size: int = 6, cell: int = 8, treasures: int = 5,
                 max_steps: int = 200, render_mode: str | None = None):
        self.size, self.cell, self.treasures, self.max_steps = size, cell, treasures, max_steps
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(len(MOVES))
        self.observation_space = spaces.Box(0, 255, (size * cell, size * cell, 3), np.uint8)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)  # seeds self.np_random: same seed, same episode
        self._walker = self.np_random.integers(self.size, size=2)
        self._treasure = self._new_treasure()
        self._found, self._steps = 0, 0
        return self._image(), {}

    def step(self, action: int):
        self._walker = np.clip(self._walker + MOVES[action], 0, self.size - 1)
        self._steps += 1
        reward = 0.0
        if (self._walker == self._treasure).all():
            reward, self._found = 1.0, self._found + 1
            self._treasure = self._new_treasure()
        terminated = self._found == self.treasures
        truncated = not terminated and self._steps >= self.max_steps
        return self._image(), reward, terminated, truncated, {}

    def render(self) -> np.ndarray:
        return self._image()

    def _new_treasure(self) -> np.ndarray:
        while True:  # anywhere but under the walker
            cell = self.np_random.integers(self.size, size=2)
            if (cell != self._walker).any():
                return cell

    def _image(self) -> np.ndarray:
        grid = np.empty((self.size, self.size, 3), np.uint8)  # [size, size, 3] one pixel a cell
        grid[:] = FLOOR
        grid[tuple(self._treasure)] = TREASURE
        grid[tuple(self._walker)] = WALKER
        return grid.repeat(self.cell, axis=0).repeat(self.cell, axis=1)  # [H, W, 3] uint8


def make_small_grid_treasure() -> gymnasium.Env:
    """A factory: any function returning an env works, e.g. to pick settings or add wrappers."""
    return GridTreasure(size=4, treasures=3, max_steps=60)


if __name__ == "__main__":
    from gymnasium.utils.env_checker import check_env

    env = GridTreasure()
    check_env(env, skip_render_check=True)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    total, steps, done = 0.0, 0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(int(rng.integers(4)))
        total, steps, done = total + reward, steps + 1, terminated or truncated
    print(f"GridTreasure: obs {obs.shape} {obs.dtype}, random episode return {total:g} "
          f"in {steps} steps")
