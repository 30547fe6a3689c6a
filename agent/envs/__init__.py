"""Environments: one ENV string -> a seeded VectorEnv of N copies with same-step autoreset.

ENV forms, tried in this order:
  `atari:…`, `gym:…`, `custom:…`, `builtin:…`   canonical names (EnvSpec.name) as they are;
  `catch`                                       the built-in pixel game (agent.envs.catch);
  `pong`, `ms_pacman`, `MsPacman`, `ALE/Pong-v5`, `PongNoFrameskip-v4`   Atari-100k protocol;
  `module:Class`, `module:factory`, `path/to/file.py:Class`               user envs;
  `CartPole-v1`                                 any registered gymnasium id;
  `MinAtar/Breakout-v1`                         MinAtar's ids (the `minatar` package);
  `dm_control/cartpole-swingup-v0`              DeepMind Control through shimmy (`[dmc]`).
"""

from __future__ import annotations

import difflib
import warnings

import gymnasium
import numpy as np

from agent.envs import atari, catch, gym_adapter
from agent.envs.atari import ATARI_100K_GAMES
from agent.envs.base import EnvError, EnvSpec, Step, VectorEnv, check_keywords
from agent.envs.check import check_env

__all__ = ["ATARI_100K_GAMES", "EnvError", "EnvSpec", "Step", "VectorEnv", "check_env",
           "make_env", "resolve_spec"]

_KINDS = ("atari", "gym", "custom", "builtin")
_BUILTINS = ("catch",)


def resolve_spec(name: str, *, mode: str = "train", image_size: int = 96,
                 grayscale: bool = False, frame_stack: int = 4, noop_max: int = 30,
                 max_episode_frames: int = 108_000, action_repeat: int = 1) -> EnvSpec:
    """Validates ENV and the keywords (building at most one env) and returns its spec.

    Raises EnvError with a one-line message naming the fix.
    """
    check_keywords(mode=mode, image_size=image_size, frame_stack=frame_stack, noop_max=noop_max,
                   max_episode_frames=max_episode_frames, action_repeat=action_repeat)
    kind, target = _parse(name, action_repeat, grayscale)
    if kind == "atari":
        return atari.resolve(target, mode=mode, image_size=image_size, grayscale=grayscale,
                             frame_stack=frame_stack, noop_max=noop_max,
                             max_episode_frames=max_episode_frames)
    if kind == "builtin":
        return catch.resolve(mode=mode, frame_stack=frame_stack,
                             max_episode_frames=max_episode_frames)
    return gym_adapter.resolve(_gym_source(kind, target), mode=mode, image_size=image_size,
                               frame_stack=frame_stack, max_episode_frames=max_episode_frames,
                               action_repeat=action_repeat)


def make_env(name: str, *, num_envs: int, seed: int, mode: str = "train", image_size: int = 96,
             grayscale: bool = False, frame_stack: int = 4, noop_max: int = 30,
             max_episode_frames: int = 108_000, action_repeat: int = 1) -> VectorEnv:
    """Builds `num_envs` copies of ENV; copy i is seeded with seed + i at the first reset().

    mode="train" makes a life loss a training terminal (Step.train_terminal); "eval" does not.
    Observations are single frames [num_envs, *frame_shape]; the agent stacks `frame_stack`
    of them into the model's (EnvSpec.obs_shape).
    """
    if not isinstance(num_envs, int | np.integer) or num_envs < 1:
        raise EnvError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise EnvError(f"seed must be an integer >= 0, got {seed!r}")
    num_envs, seed = int(num_envs), int(seed)  # ale_py rejects numpy integers
    check_keywords(mode=mode, image_size=image_size, frame_stack=frame_stack, noop_max=noop_max,
                   max_episode_frames=max_episode_frames, action_repeat=action_repeat)
    # Each kind reads its spec off the envs it builds: no extra env just for checking.
    kind, target = _parse(name, action_repeat, grayscale)
    if kind == "atari":
        return atari.AtariEnv(target, num_envs=num_envs, seed=seed, mode=mode,
                              image_size=image_size, grayscale=grayscale, frame_stack=frame_stack,
                              noop_max=noop_max, max_episode_frames=max_episode_frames)
    if kind == "builtin":
        spec = catch.resolve(mode=mode, frame_stack=frame_stack,
                             max_episode_frames=max_episode_frames)
        return catch.CatchEnv(spec, num_envs=num_envs, seed=seed, mode=mode)
    return gym_adapter.GymEnv(_gym_source(kind, target), num_envs=num_envs, seed=seed,
                              mode=mode, image_size=image_size, frame_stack=frame_stack,
                              max_episode_frames=max_episode_frames, action_repeat=action_repeat)


def _parse(name: str, action_repeat: int = 1, grayscale: bool = False) -> tuple[str, str]:
    """ENV string -> (kind, target): the ROM id, gymnasium id, `module:Attr` or builtin name."""
    _register_extras(name.removeprefix("gym:"))
    prefix, colon, rest = name.partition(":")
    if colon and prefix in _KINDS:
        kind, target = prefix, rest
    elif name in _BUILTINS:
        kind, target = "builtin", name
    elif atari.game_id(name) is not None:
        kind, target = "atari", name
    elif colon:
        kind, target = "custom", name
    elif name in gymnasium.registry:
        kind, target = "gym", name
    else:
        raise EnvError(_unknown(name))
    if kind == "atari":
        game = atari.game_id(target)
        if game is None:
            raise EnvError(f"unknown Atari game {target!r}; closest Atari games: "
                           f"{', '.join(atari.closest_games(target))}")
        return kind, game
    if kind == "builtin" and target not in _BUILTINS:
        raise EnvError(f"unknown builtin env {target!r}; builtins: {', '.join(_BUILTINS)}")
    if kind in ("atari", "builtin") and action_repeat != 1:
        raise EnvError(f"action_repeat {action_repeat} applies to gymnasium and custom envs; "
                       f"{name!r} keeps its own (Atari skips 4 frames by the protocol): use 1")
    if kind != "atari" and grayscale:
        raise EnvError(f"grayscale applies to Atari games only; {name!r} gives its own frames: "
                       "drop --env.grayscale")
    return kind, target


def _register_extras(env_id: str) -> None:
    """Registers MinAtar's and DeepMind Control's gymnasium ids on first use (from the
    optional packages that hold them)."""
    if env_id in gymnasium.registry:
        return
    if env_id.startswith("MinAtar/"):
        try:
            from minatar.gym import register_envs
        except ImportError as error:
            raise EnvError(f"{env_id!r} needs the minatar package: pip install minatar "
                           "(or pip install -e '.[ladder]')") from error
        register_envs()
    elif env_id.startswith("dm_control/"):
        try:
            # dm_control probes for a display at import; training renders nothing, so
            # its "DISPLAY is missing" warning on a headless machine is noise.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*DISPLAY environment variable")
                import shimmy
        except ImportError as error:
            raise EnvError(f"{env_id!r} needs DeepMind Control through shimmy: "
                           "pip install -e '.[dmc]'") from error
        gymnasium.register_envs(shimmy)


def _gym_source(kind: str, target: str) -> gym_adapter.Source:
    if kind == "custom" or ":" in target:  # `gym:module:EnvId-v0` imports module first
        return gym_adapter.custom_source(target)
    if target not in gymnasium.registry:
        raise EnvError(f"{target!r} is not a registered gymnasium id; check the spelling or "
                       "import the package that registers it")
    return gym_adapter.gym_source(target)


def _unknown(name: str) -> str:
    message = (f"unknown env {name!r}: not an Atari game, gymnasium id or module:Class; "
               f"closest Atari games: {', '.join(atari.closest_games(name))}")
    gym_ids = [key for key, spec in gymnasium.registry.items()
               if not str(spec.entry_point).startswith("ale_py")]
    close = difflib.get_close_matches(name, gym_ids, n=3, cutoff=0.6)
    return message + (f"; closest gymnasium ids: {', '.join(close)}" if close else "")
