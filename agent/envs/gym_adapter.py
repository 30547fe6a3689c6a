"""Gymnasium ids and user environments (`module:Class`, `module:factory`, `file.py:Class`).

Supported: Discrete actions, or flat Box (D,) actions with finite bounds (agents act in
[-1, 1], rescaled here to the bounds); observations that are uint8 images, Box (H, W, C) or
(H, W), bool images of the same shapes (MinAtar's C feature planes; read as uint8 0 / 255),
flat vectors, Box (F,), or a Dict of float Boxes (DeepMind Control's proprioceptive
observations), flattened into one vector in sorted key order. Images larger than
image_size are area-resized to image_size x image_size; smaller ones keep their size.
The env hands out single frames; the agent stacks the last `frame_stack` images (vectors
are not stacked). Each agent action may be repeated `action_repeat` env steps (rewards
summed, stopping at an episode's end).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import os
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env as gymnasium_check_env

from agent.envs.base import STACK_RESET, EnvError, EnvSpec, VectorEnv
from agent.errors import one_line


@dataclass(frozen=True)
class Source:
    """Where an env comes from: its canonical name and a no-argument constructor."""

    name: str  # "gym:CartPole-v1" or "custom:module:Attr"
    kind: str  # "gym" | "custom"
    make: Callable[[], gymnasium.Env]


def gym_source(env_id: str) -> Source:
    # Our adapter runs gymnasium's checker once at resolve time; skip its passive copy per env.
    return Source(f"gym:{env_id}", "gym",
                  lambda: gymnasium.make(env_id, disable_env_checker=True))


def custom_source(target: str) -> Source:
    """`module:Attr` or `path/to/file.py:Attr`, where Attr is an Env class or a factory.

    A `module:EnvId-v0` whose module registers EnvId-v0 with gymnasium is a gym id.
    """
    where, _, attr = target.rpartition(":")
    if not where or not attr:
        raise EnvError(f"env {target!r} must look like module:Class, module:factory or "
                       "path/to/file.py:Class")
    module = _import(where, target)
    if not hasattr(module, attr):
        if attr in gymnasium.registry:
            return gym_source(target)
        found = ", ".join(_candidates(module)) or "none"
        raise EnvError(f"module {where!r} has no attribute {attr!r} (env {target!r}); "
                       f"Env classes and functions there: {found}")
    factory = getattr(module, attr)
    if not callable(factory) or isinstance(factory, gymnasium.Env):
        raise EnvError(f"{target!r} must be a gymnasium.Env class or a function returning one, "
                       f"not {type(factory).__name__}")
    return Source(f"custom:{target}", "custom", factory)


def _import(where: str, target: str):
    try:
        if where.endswith(".py"):
            return _import_file(Path(where))
        # Console scripts do not put the working directory on sys.path; user envs live there.
        if os.getcwd() not in sys.path:
            sys.path.append(os.getcwd())
        return importlib.import_module(where)
    except Exception as error:
        raise EnvError(f"cannot import {where!r} for env {target!r} ({one_line(error)}); "
                       "check the module path and run from the directory that holds it"
                       ) from error


def _import_file(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"no file {path}")
    module_name = f"dreamzero_user_env_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    # Registered before running it: dataclasses and pickling look the module up by name.
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _candidates(module) -> list[str]:
    """Names in `module` that could be meant: Env subclasses and functions defined there."""
    return sorted(
        name for name, value in vars(module).items()
        if not name.startswith("_") and (
            (inspect.isclass(value) and issubclass(value, gymnasium.Env))
            or (inspect.isfunction(value) and value.__module__ == module.__name__)))


def _build(source: Source) -> gymnasium.Env:
    try:
        env = source.make()
    except Exception as error:
        raise EnvError(f"building {source.name!r} failed ({one_line(error)}); fix the env or "
                       "install what it needs") from error
    if not isinstance(env, gymnasium.Env):
        raise EnvError(f"{source.name!r} built a {type(env).__name__}, not a gymnasium.Env; "
                       "subclass gymnasium.Env or return one from the factory")
    space = env.observation_space
    if isinstance(space, spaces.Dict) and all(
            isinstance(s, spaces.Box) and s.dtype.kind == "f" for s in space.values()):
        env = gymnasium.wrappers.FlattenObservation(env)
    return env


def resolve(source: Source, *, mode: str, image_size: int, frame_stack: int,
            max_episode_frames: int, action_repeat: int) -> EnvSpec:
    """Builds one env, validates its spaces, runs gymnasium's checker (warnings only)."""
    env = _build(source)
    try:
        spec = _spec(source, env, mode=mode, image_size=image_size, frame_stack=frame_stack,
                     max_episode_frames=max_episode_frames, action_repeat=action_repeat)
        _run_gymnasium_checker(env, source.name)
    finally:
        env.close()
    return spec


def _run_gymnasium_checker(env: gymnasium.Env, name: str) -> None:
    """Reports gymnasium's env checker findings as one warning instead of many."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            gymnasium_check_env(env.unwrapped, skip_render_check=True, skip_close_check=True)
            failure = []
        except Exception as error:
            failure = [one_line(error)]
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", str(w.message)) for w in caught]
    # The adapter rescales Box actions from [-1, 1] itself, so the advice to normalise
    # the action space does not apply.
    found = [text.removeprefix("WARN: ") for text in plain
             if "recommend using a symmetric and normalized space" not in text] + failure
    if found:
        # stacklevel 4: the caller of resolve_spec.
        warnings.warn(f"gymnasium env checker on {name!r}: {' | '.join(dict.fromkeys(found))}",
                      stacklevel=4)


def _spec(source: Source, env: gymnasium.Env, *, mode: str, image_size: int, frame_stack: int,
          max_episode_frames: int, action_repeat: int) -> EnvSpec:
    action_space, obs_space = env.action_space, env.observation_space
    # The env's own time limit (gymnasium's, in env steps) ends episodes too: the cap in
    # agent steps is whichever comes first (DMC's 1,000 steps are 500 at action repeat 2).
    own_limit = env.spec.max_episode_steps if env.spec is not None else None
    cap = max_episode_frames if own_limit is None else min(
        max_episode_frames, math.ceil(own_limit / action_repeat))
    settings = {"mode": mode, "max_episode_steps": cap, "autoreset": "same_step",
                "action_repeat": action_repeat}
    if isinstance(env, gymnasium.wrappers.FlattenObservation):
        settings.update(observation=f"Dict {sorted(env.env.observation_space)} flattened")
    num_actions, action_dim = _actions(source.name, action_space, settings)
    shape = obs_space.shape if isinstance(obs_space, spaces.Box) else None
    if shape is not None and obs_space.dtype in (np.uint8, np.bool_) and len(shape) in (2, 3):
        native = (*shape[:2], shape[2] if len(shape) == 3 else 1)
        if obs_space.dtype == np.bool_:
            settings.update(bool_image="True -> 255, False -> 0")
        size = (image_size, image_size) if max(shape[:2]) > image_size else native[:2]
        resized = f"{native[0]}x{native[1]} -> {size[0]}x{size[1]} (area resize)"
        settings.update(frame_stack=frame_stack, stack_reset=STACK_RESET,
                        image=resized if size != native[:2] else "native size")
        return EnvSpec(name=source.name, kind=source.kind, frame_shape=(*size, native[2]),
                       frame_dtype="uint8", stack=frame_stack, num_actions=num_actions,
                       is_image=True, action_dim=action_dim, settings=settings)
    if shape is not None and len(shape) == 1:
        settings.update(frame_stack=f"1 (vector observations are not stacked; "
                                    f"frame_stack={frame_stack} ignored)")
        return EnvSpec(name=source.name, kind=source.kind, frame_shape=(int(shape[0]),),
                       frame_dtype="float32", stack=1, num_actions=num_actions,
                       is_image=False, action_dim=action_dim, settings=settings)
    described = (f"Box{shape} {obs_space.dtype}" if shape is not None
                 else type(obs_space).__name__)
    raise EnvError(f"{source.name!r} has a {described} observation space; dreamzero needs a uint8 "
                   "image Box (H, W, C) or (H, W), a bool one (read as 0 / 255), or a flat Box "
                   "(F,): convert it with a gymnasium.ObservationWrapper (e.g. "
                   "FlattenObservation)")


def _actions(name: str, space: gymnasium.Space, settings: dict) -> tuple[int, int]:
    """(num_actions, action_dim) of a Discrete or flat, bounded Box action space; a Box's
    bounds go into settings."""
    if isinstance(space, spaces.Discrete):
        return int(space.n), 0
    if not isinstance(space, spaces.Box):
        raise EnvError(f"{name!r} has a {type(space).__name__} action space; dreamzero needs "
                       "Discrete or flat Box actions: convert them with a gymnasium.ActionWrapper")
    if len(space.shape) != 1:
        raise EnvError(f"{name!r} has a Box{space.shape} action space; dreamzero needs a flat "
                       "Box (D,): reshape it with a gymnasium.ActionWrapper")
    if not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
        raise EnvError(f"{name!r} has unbounded actions (low {space.low.tolist()}, high "
                       f"{space.high.tolist()}); dreamzero squashes its actions into finite "
                       "bounds: give the env a bounded action_space and wrap it with "
                       "gymnasium.wrappers.ClipAction or RescaleAction")
    settings.update(action_low=space.low.tolist(), action_high=space.high.tolist(),
                    actions="[-1, 1] rescaled to [low, high]")
    return 0, int(space.shape[0])


class GymEnv(VectorEnv):
    """`num_envs` gymnasium envs stepped in a loop; env i is seeded with seed + i."""

    def __init__(self, source: Source, *, num_envs: int, seed: int, mode: str, image_size: int,
                 frame_stack: int, max_episode_frames: int, action_repeat: int = 1):
        self._envs = []
        try:
            for _ in range(num_envs):
                self._envs.append(_build(source))
            spec = _spec(source, self._envs[0], mode=mode, image_size=image_size,
                         frame_stack=frame_stack, max_episode_frames=max_episode_frames,
                         action_repeat=action_repeat)
        except Exception:
            self.close()
            raise
        super().__init__(spec, num_envs=num_envs, mode=mode)
        space = self._envs[0].observation_space
        self._native_shape = space.shape
        self._bool_images = spec.is_image and space.dtype == np.bool_
        self._resize = _area_resizer(space.shape[:2], spec.frame_shape[:2]) if (
            spec.is_image and space.shape[:2] != spec.frame_shape[:2]) else None
        action_space = self._envs[0].action_space
        if spec.continuous:
            low, high = action_space.low, action_space.high
            self._action_to_env = lambda a: (low + (a + 1.0) * 0.5 * (high - low)).astype(
                action_space.dtype)
        else:
            start = int(action_space.start)
            self._action_to_env = lambda a: int(a) + start
        self._seed = seed
        self._repeat = action_repeat
        self._cap = spec.settings["max_episode_steps"]  # ours or the env's own, the sooner
        self._t = np.zeros(num_envs, np.int64)  # [N] steps in this episode

    def _reset(self) -> np.ndarray:
        seeds = [None] * self.num_envs if self._seed is None else [
            self._seed + i for i in range(self.num_envs)]
        self._seed = None  # later resets continue each env's own stream
        raw = [env.reset(seed=s)[0] for env, s in zip(self._envs, seeds, strict=True)]
        self._t[:] = 0
        return self._frames(raw)

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        n = self.num_envs
        raw, reward = [], np.zeros(n, np.float32)  # reward: [N]
        terminated, truncated = np.zeros(n, bool), np.zeros(n, bool)  # [N]
        self._t += 1
        for i, (env, action) in enumerate(zip(self._envs, actions, strict=True)):
            for _ in range(self._repeat):
                obs, step_reward, terminated[i], truncated[i], _ = env.step(
                    self._action_to_env(action))
                reward[i] += step_reward
                if terminated[i] or truncated[i]:
                    break
            truncated[i] = not terminated[i] and (truncated[i] or self._t[i] >= self._cap)
            if terminated[i] or truncated[i]:
                obs, _ = env.reset()
                self._t[i] = 0
            raw.append(obs)
        return self._frames(raw), reward, terminated, truncated, np.zeros(n, bool)

    def _frames(self, raw: list) -> np.ndarray:
        """Per-env observations -> frames [N, *frame_shape] in the spec's dtype."""
        frames = np.stack([np.asarray(obs) for obs in raw])  # [N, *native_shape]
        if frames.shape[1:] != tuple(self._native_shape):
            raise EnvError(f"{self.spec.name!r} returned observations of shape "
                           f"{frames.shape[1:]} but its observation_space says "
                           f"{self._native_shape}; make them agree")
        if not self.spec.is_image:
            return frames.astype(np.float32)
        height, width = self._native_shape[:2]
        frames = frames.astype(np.uint8, copy=False).reshape(len(raw), height, width, -1)
        if self._bool_images:
            # Full-scale pixels: the model and augmentation expect uint8 in [0, 255].
            frames *= 255
        return frames if self._resize is None else self._resize(frames)  # [N, H, W, C]

    def close(self) -> None:
        for env in self._envs:
            env.close()


def _area_resizer(src: tuple[int, int], dst: tuple[int, int]) -> Callable:
    """Returns frames [N, *src, C] uint8 -> [N, *dst, C] uint8, each output pixel the
    area-weighted mean of the input pixels it covers (cv2's INTER_AREA when shrinking)."""
    rows, cols = _area_weights(src[0], dst[0]), _area_weights(src[1], dst[1])

    def resize(frames: np.ndarray) -> np.ndarray:
        out = np.einsum("oh,nhwc,pw->nopc", rows, frames.astype(np.float32), cols,
                        optimize=True)  # [N, dst_h, dst_w, C]
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    return resize


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights: the overlap of output cell o with input pixel i, rows sum to 1."""
    edges = np.arange(n_out + 1) * (n_in / n_out)  # [n_out + 1] output cell edges
    start, stop = edges[:-1, None], edges[1:, None]
    pixel = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(stop, pixel + 1) - np.maximum(start, pixel), 0, None)
    return (overlap / (n_in / n_out)).astype(np.float32)
