"""Catch: a tiny built-in pixel game, the quickstart environment (fast, seeded, pure numpy).

Rules: a 10 x 10 board. A ball starts in row 0 of a random column and falls one row per
step; the paddle sits on the bottom row and moves LEFT / STAY / RIGHT (actions 0, 1, 2)
before the ball falls. When the ball reaches the bottom row the step pays +1 if the paddle
is under it and -1 otherwise, and the next ball appears in row 0 at once. An episode is
10 balls, 9 steps each (90 steps). The paddle starts in column 5 each episode.

Frames are (10, 10, 1) uint8: ball 255, paddle 128, empty 0.

OPTIMAL_RETURN = 10: a ball needs at most 9 moves to be reached and falls for 9 steps.
RANDOM_RETURN = 10 * (2 / 10 - 1) = -8 exactly: the ball's column is uniform and drawn
independently of where the paddle is, so any policy that ignores the screen catches each
ball with probability 1 / 10, and each ball is worth 2 * P(catch) - 1.
"""

from __future__ import annotations

import numpy as np

from agent.envs.base import STACK_RESET, EnvSpec, VectorEnv

ROWS = 10
COLS = 10
NUM_BALLS = 10
BALL, PADDLE = 255, 128
OPTIMAL_RETURN = float(NUM_BALLS)
RANDOM_RETURN = NUM_BALLS * (2 / COLS - 1)  # -8.0


def resolve(*, mode: str, frame_stack: int, max_episode_frames: int) -> EnvSpec:
    settings = {
        "game": "catch",
        "mode": mode,
        "board": f"{ROWS}x{COLS}",
        "balls_per_episode": NUM_BALLS,
        "actions": ["LEFT", "STAY", "RIGHT"],
        "frame_stack": frame_stack,
        "stack_reset": STACK_RESET,
        "image_size": "ignored (native 10x10)",
        "max_episode_steps": max_episode_frames,
        "random_return": RANDOM_RETURN,
        "optimal_return": OPTIMAL_RETURN,
        "autoreset": "same_step",
    }
    return EnvSpec(name="builtin:catch", kind="builtin", frame_shape=(ROWS, COLS, 1),
                   frame_dtype="uint8", stack=frame_stack, num_actions=3, is_image=True,
                   settings=settings)


class CatchEnv(VectorEnv):
    """`num_envs` boards stepped together; board i draws its balls from seed + i."""

    def __init__(self, spec: EnvSpec, *, num_envs: int, seed: int, mode: str):
        super().__init__(spec, num_envs=num_envs, mode=mode)
        self._rngs = [np.random.default_rng(seed + i) for i in range(num_envs)]
        self._cap = spec.settings["max_episode_steps"]
        self._columns = np.zeros((num_envs, NUM_BALLS), np.int64)  # [N, balls] spawn columns
        self._ball = np.zeros(num_envs, np.int64)  # [N] index of the falling ball
        self._row = np.zeros(num_envs, np.int64)  # [N] its row
        self._paddle = np.zeros(num_envs, np.int64)  # [N] paddle column
        self._t = np.zeros(num_envs, np.int64)  # [N] steps in this episode

    def _reset(self) -> np.ndarray:
        self._new_episodes(np.ones(self.num_envs, bool))
        return self._render()

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        envs = np.arange(self.num_envs)
        self._paddle = np.clip(self._paddle + actions - 1, 0, COLS - 1)
        self._row += 1
        self._t += 1
        landed = self._row == ROWS - 1  # [N] bool
        caught = self._paddle == self._columns[envs, self._ball]
        reward = np.where(landed, np.where(caught, 1.0, -1.0), 0.0).astype(np.float32)  # [N]
        self._ball += landed
        terminated = self._ball == NUM_BALLS  # [N] bool
        truncated = ~terminated & (self._t >= self._cap)  # [N] bool
        self._row[landed] = 0
        done = terminated | truncated
        self._new_episodes(done)
        return self._render(), reward, terminated, truncated, np.zeros(self.num_envs, bool)

    def close(self) -> None:
        """Nothing to release: the boards are plain arrays."""

    def _new_episodes(self, mask: np.ndarray) -> None:
        for i in np.flatnonzero(mask):
            self._columns[i] = self._rngs[i].integers(COLS, size=NUM_BALLS)
        self._ball[mask] = 0
        self._row[mask] = 0
        self._paddle[mask] = COLS // 2
        self._t[mask] = 0

    def _render(self) -> np.ndarray:
        envs = np.arange(self.num_envs)
        frames = np.zeros((self.num_envs, ROWS, COLS, 1), np.uint8)  # [N, H, W, 1]
        frames[envs, ROWS - 1, self._paddle, 0] = PADDLE
        frames[envs, self._row, self._columns[envs, self._ball], 0] = BALL
        return frames
