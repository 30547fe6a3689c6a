"""The contracts every environment kind implements: EnvSpec, Step, VectorEnv, EnvError.

Envs hand out one frame per env step; the agent stacks them, by the replay's rule alone
(agent.replay), so the stacks seen when acting and when learning cannot differ.
VectorEnv checks what every env hands out (observations against the spec, finite
rewards), so bad data from any env kind is refused where it enters training or evaluation.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

MODES = ("train", "eval")
# The rule the agent stacks frames by (agent.replay), shown in image envs' settings.
STACK_RESET = "first frame repeated after each reset and training terminal"


class EnvError(ValueError):
    """A bad ENV name or an unsupported environment; the message is one line naming the fix."""


class EnvDataError(EnvError):
    """An observation or reward that breaks the env's spec (NaN/inf, dtype, shape); the
    message names the env, the env index, the step and the field."""


@dataclass(frozen=True)
class EnvSpec:
    """What an environment produces, fixed before any env is built.

    name: canonical string that resolves to the same env again ("atari:pong", "gym:CartPole-v1",
      "custom:examples.custom_env:GridTreasure", "builtin:catch").
    kind: "atari" | "gym" | "custom" | "builtin".
    frame_shape: one frame, (H, W, C) for images or (F,) for vectors.
    frame_dtype: "uint8" for images, "float32" for vectors.
    stack: frames per model observation (1 for vectors); the agent stacks them.
    num_actions: the Discrete choices; 0 for a Box action space.
    is_image: frames are images (uint8) rather than vectors.
    action_dim: a Box action space's dimensions, 0 for Discrete. Agents act in [-1, 1]
      per dimension; the env rescales that to its bounds (shown in settings).
    settings: the protocol values in force (JSON-friendly), printed by check_env.
    """

    name: str
    kind: str
    frame_shape: tuple[int, ...]
    frame_dtype: str
    stack: int
    num_actions: int
    is_image: bool
    action_dim: int = 0
    settings: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def continuous(self) -> bool:
        """Box actions (in [-1, 1]^action_dim) rather than Discrete ones."""
        return self.action_dim > 0

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """One model input: (H, W, stack * C) for images, (stack * F,) for vectors."""
        if self.is_image:
            height, width, channels = self.frame_shape
            return (height, width, self.stack * channels)
        return (self.stack * self.frame_shape[0],)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "frame_shape": list(self.frame_shape),
            "frame_dtype": self.frame_dtype,
            "stack": self.stack,
            "obs_shape": list(self.obs_shape),
            "num_actions": self.num_actions,
            "is_image": self.is_image,
            "action_dim": self.action_dim,
            "settings": dict(self.settings),
        }


class Step(NamedTuple):
    """One step of N environments; where an episode ended, `obs` already starts the next one.

    obs: [N, *frame_shape] uint8 or float32, each env's newest frame
    reward: [N] float32, raw (unclipped)
    terminated: [N] bool, real end of the game
    truncated: [N] bool, time or frame cap
    train_terminal: [N] bool, terminated | life loss (life loss only in mode="train")
    episode_return: [N] float32, raw return of the episode that ended here (0 elsewhere)
    episode_length: [N] int32, agent steps of the episode that ended here (0 elsewhere)
    """

    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    train_terminal: np.ndarray
    episode_return: np.ndarray
    episode_length: np.ndarray


class VectorEnv(abc.ABC):
    """N copies of one environment stepped in lockstep, with same-step autoreset.

    Subclasses implement `_reset` and `_step`; this class keeps the episode statistics,
    turns life losses into training terminals and refuses bad data (EnvDataError). The seed
    is used by the first `reset()`; later episodes continue each copy's own random stream,
    so runs are reproducible.
    """

    def __init__(self, spec: EnvSpec, *, num_envs: int, mode: str):
        self.spec = spec
        self.num_envs = num_envs
        self._life_loss_terminal = mode == "train"
        self._return = np.zeros(num_envs, np.float32)  # [N] raw return so far
        self._length = np.zeros(num_envs, np.int32)  # [N] agent steps so far
        self._steps = 0  # step() calls since reset(), for error messages
        self._started = False

    @property
    def num_actions(self) -> int:
        return self.spec.num_actions

    def reset(self) -> np.ndarray:
        """Starts new episodes in all copies; returns obs [N, *frame_shape]."""
        self._return[:] = 0
        self._length[:] = 0
        self._steps = 0
        self._started = True
        obs = self._reset()
        self._check(obs)
        return obs

    def step(self, actions: np.ndarray) -> Step:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = self._valid_actions(np.asarray(actions))
        obs, reward, terminated, truncated, life_loss = self._step(actions)
        self._steps += 1
        self._check(obs, reward)
        self._return += reward
        self._length += 1
        done = terminated | truncated
        episode_return = np.where(done, self._return, 0).astype(np.float32)  # [N]
        episode_length = np.where(done, self._length, 0).astype(np.int32)  # [N]
        self._return[done] = 0
        self._length[done] = 0
        train_terminal = terminated | (life_loss & self._life_loss_terminal)  # [N] bool
        return Step(obs, reward, terminated, truncated, train_terminal, episode_return,
                    episode_length)

    def _valid_actions(self, actions: np.ndarray) -> np.ndarray:
        """[N] int32 in [0, num_actions), or for Box actions [N, D] float32 in [-1, 1]."""
        if self.spec.continuous:
            shape = (self.num_envs, self.spec.action_dim)
            if actions.shape != shape or actions.dtype.kind != "f":
                raise ValueError(f"actions must be {list(shape)} floats, got {actions.shape} "
                                 f"{actions.dtype}")
            if not (np.isfinite(actions).all() and np.abs(actions).max() <= 1.0):
                raise ValueError(f"actions must lie in [-1, 1], got {actions}")
            return actions.astype(np.float32)
        if actions.shape != (self.num_envs,) or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be [{self.num_envs}] integers, got {actions.shape} "
                             f"{actions.dtype}")
        if actions.min() < 0 or actions.max() >= self.num_actions:
            raise ValueError(f"actions must lie in [0, {self.num_actions}), got {actions}")
        return actions.astype(np.int32)

    def _check(self, obs: np.ndarray, reward: np.ndarray | None = None) -> None:
        """Raises EnvDataError unless obs is [N, *frame_shape] of the spec's dtype and
        finite, and reward [N] finite numbers."""
        expected = (self.num_envs, *self.spec.frame_shape)
        if not isinstance(obs, np.ndarray) or obs.shape != expected:
            shape = getattr(obs, "shape", type(obs).__name__)
            raise self._bad("observation", f"has shape {shape}, the spec says {expected}")
        if obs.dtype != np.dtype(self.spec.frame_dtype):
            rule = " (images are uint8, 0..255)" if self.spec.is_image else ""
            raise self._bad("observation",
                            f"has dtype {obs.dtype}, the spec says {self.spec.frame_dtype}{rule}")
        if obs.dtype.kind == "f":
            self._check_finite("observation", obs.reshape(self.num_envs, -1))
        if reward is None:
            return
        if (not isinstance(reward, np.ndarray) or reward.shape != (self.num_envs,)
                or reward.dtype.kind not in "iuf"):
            described = (f"{reward.shape} {reward.dtype}" if isinstance(reward, np.ndarray)
                         else type(reward).__name__)
            raise self._bad("reward", f"is {described}, not [{self.num_envs}] numbers")
        self._check_finite("reward", reward[:, None])

    def _check_finite(self, field: str, values: np.ndarray) -> None:
        """values: [N, F]; names the first env index holding a NaN or inf."""
        finite = np.isfinite(values)
        if not finite.all():
            index = int(np.flatnonzero(~finite.all(axis=1))[0])
            bad = values[index][~finite[index]][0]
            verb = "is" if values.shape[1] == 1 else "holds"
            raise self._bad(field, f"{verb} {bad} (must be finite)", index=index)

    def _bad(self, field: str, problem: str, *, index: int | None = None) -> EnvDataError:
        where = f"env index {index}, " if index is not None else ""
        return EnvDataError(f"env {self.spec.name}, {where}step {self._steps}: {field} "
                            f"{problem}; fix the env (or wrap it) so it returns valid data")

    @abc.abstractmethod
    def close(self) -> None:
        """Releases the environments."""

    def __enter__(self) -> VectorEnv:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @abc.abstractmethod
    def _reset(self) -> np.ndarray:
        """Resets every copy (seeded the first time); returns obs [N, *frame_shape]."""

    @abc.abstractmethod
    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        """Steps with actions [N] int32 (Box: [N, D] float32 in [-1, 1]) and resets
        finished copies at once.

        Returns obs [N, *frame_shape] (the next episode's first frame where one ended),
        reward [N] float32, terminated [N] bool, truncated [N] bool, life_loss [N] bool.
        """


def check_keywords(*, mode: str, image_size: int, frame_stack: int, noop_max: int,
                   max_episode_frames: int, action_repeat: int = 1) -> None:
    """Rejects keyword values no environment kind can honour."""
    if mode not in MODES:
        raise EnvError(f"mode must be 'train' or 'eval', got {mode!r}")
    for key, value, low in [("image_size", image_size, 1), ("frame_stack", frame_stack, 1),
                            ("noop_max", noop_max, 0),
                            ("max_episode_frames", max_episode_frames, 1),
                            ("action_repeat", action_repeat, 1)]:
        if not isinstance(value, int | np.integer) or value < low:
            raise EnvError(f"{key} must be an integer >= {low}, got {value!r}")
