"""Tiny gymnasium envs that go wrong at a known step, for tests/test_faults.py.

Vector observations of 4 floats, 2 actions, 50-step episodes. The copy seeded with an odd
seed (env index 1 of `--env.num-envs 2` at seed 0) misbehaves at its BAD_STEP-th step.
"""

import gymnasium
import numpy as np
from gymnasium import spaces

BAD_STEP = 5


class _Faulty(gymnasium.Env):
    observation_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self):
        self._faulty = False
        self._t = self._steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self._faulty = seed % 2 == 1
        self._t = 0
        return np.zeros(4, np.float32), {}

    def step(self, action):
        self._t += 1
        self._steps += 1
        obs, reward = np.full(4, 0.1 * action, np.float32), 0.0
        if self._faulty and self._steps == BAD_STEP:
            obs, reward = self.go_wrong(obs, reward)
        return obs, reward, self._t >= 50, False, {}

    def go_wrong(self, obs, reward):
        raise NotImplementedError


class NaNObservation(_Faulty):
    def go_wrong(self, obs, reward):
        obs[2] = np.nan
        return obs, reward


class NaNReward(_Faulty):
    def go_wrong(self, obs, reward):
        return obs, float("nan")


class Crashing(_Faulty):
    def go_wrong(self, obs, reward):
        raise RuntimeError("the simulator lost its connection")
