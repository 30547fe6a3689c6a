"""The grid of examples/grid_env.py with its pixels replaced by hand-made features: a probe
of how much of the grid's difficulty is the representation.

    dreamzero train --env scripts/grid_features.py:GridAxes --env-steps 5000
    dreamzero train --env scripts/grid_features.py:GridCells --env-steps 5000

Same rules, rewards and episodes as `Grid` (same seed, same boards); only the observation
differs:

- `GridAxes`: one-hot agent row, agent column, goal row and goal column (4 x 6 values).
  Distance is then a sum over axes of the same small table, shared by every board.
- `GridCells`: one-hot agent cell and goal cell (2 x 36 values): what the pixels say, without
  their colours and repetition, and as little shared between boards as they are.
- `GridAxesCells`: both.

Success counts as in `Grid`: an episode reached the goal iff its return is > 0.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from gymnasium import spaces

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for examples/
from examples.grid_env import SIZE, Grid  # noqa: E402


def _axes(grid: Grid) -> np.ndarray:
    """[4 * SIZE]: agent row, agent column, goal row, goal column, each one-hot."""
    out = np.zeros((4, SIZE), np.float32)  # [4, SIZE]
    out[np.arange(4), [*grid._agent, *grid._goal]] = 1.0
    return out.reshape(-1)


def _cells(grid: Grid) -> np.ndarray:
    """[2 * SIZE * SIZE]: agent cell, goal cell, each one-hot over the cells."""
    out = np.zeros((2, SIZE * SIZE), np.float32)  # [2, 36] agent, goal
    out[0, grid._agent[0] * SIZE + grid._agent[1]] = 1.0
    out[1, grid._goal[0] * SIZE + grid._goal[1]] = 1.0
    return out.reshape(-1)


class GridAxes(Grid):
    """Observation [24]: agent row, agent column, goal row, goal column, one-hot."""

    def __init__(self, render_mode: str | None = None):
        super().__init__(render_mode)
        self.observation_space = spaces.Box(0, 1, (4 * SIZE,), np.float32)

    def _image(self) -> np.ndarray:
        return _axes(self)


class GridCells(Grid):
    """Observation [72]: agent cell, goal cell, one-hot over the 36 cells."""

    def __init__(self, render_mode: str | None = None):
        super().__init__(render_mode)
        self.observation_space = spaces.Box(0, 1, (2 * SIZE * SIZE,), np.float32)

    def _image(self) -> np.ndarray:
        return _cells(self)


class GridAxesCells(Grid):
    """Observation [96]: `GridAxes`' features, then `GridCells'`."""

    def __init__(self, render_mode: str | None = None):
        super().__init__(render_mode)
        self.observation_space = spaces.Box(0, 1, (4 * SIZE + 2 * SIZE * SIZE,), np.float32)

    def _image(self) -> np.ndarray:
        return np.concatenate([_axes(self), _cells(self)])
