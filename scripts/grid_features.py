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


def _one_hots(*indices: int) -> np.ndarray:
    """One block of SIZE values per index, each one-hot."""
    out = np.zeros((len(indices), SIZE), np.float32)  # [K, SIZE]
    out[np.arange(len(indices)), indices] = 1.0
    return out.reshape(-1)


class GridAxes(Grid):
    """Observation [24]: agent row, agent column, goal row, goal column, one-hot."""

    def __init__(self, render_mode: str | None = None):
        super().__init__(render_mode)
        self.observation_space = spaces.Box(0, 1, (4 * SIZE,), np.float32)

    def _image(self) -> np.ndarray:
        return _one_hots(*self._agent, *self._goal)


class GridCells(Grid):
    """Observation [72]: agent cell, goal cell, one-hot over the 36 cells."""

    def __init__(self, render_mode: str | None = None):
        super().__init__(render_mode)
        self.observation_space = spaces.Box(0, 1, (2 * SIZE * SIZE,), np.float32)

    def _image(self) -> np.ndarray:
        cells = np.zeros((2, SIZE * SIZE), np.float32)  # [2, 36] agent, goal
        cells[0, self._agent[0] * SIZE + self._agent[1]] = 1.0
        cells[1, self._goal[0] * SIZE + self._goal[1]] = 1.0
        return cells.reshape(-1)


class GridAxesCells(Grid):
    """Observation [96]: `GridAxes`' features, then `GridCells'`."""

    def __init__(self, render_mode: str | None = None):
        super().__init__(render_mode)
        self.observation_space = spaces.Box(0, 1, (4 * SIZE + 2 * SIZE * SIZE,), np.float32)

    def _image(self) -> np.ndarray:
        return np.concatenate([GridAxes._image(self), GridCells._image(self)])
