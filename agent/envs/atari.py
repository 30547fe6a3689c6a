"""Atari games under the Atari-100k protocol, on ale_py's threaded AtariVectorEnv.

Protocol (DER / SPR / EfficientZero): frameskip 4 with a max-pool over the last two frames,
no sticky actions, minimal action set, up to `noop_max` random no-ops at reset, RGB (or
grayscale) frames resized to image_size x image_size, raw rewards, no fire-reset, life loss
a terminal for training only (the game goes on), episodes capped at `max_episode_frames`
frames.
"""

from __future__ import annotations

import difflib
import math
import re

import numpy as np
from ale_py import roms
from ale_py.vector_env import AtariVectorEnv
from gymnasium.vector import AutoresetMode

from agent.envs.base import STACK_RESET, EnvSpec, VectorEnv

FRAMESKIP = 4

ATARI_100K_GAMES = (
    "alien", "amidar", "assault", "asterix", "bank_heist", "battle_zone", "boxing", "breakout",
    "chopper_command", "crazy_climber", "demon_attack", "freeway", "frostbite", "gopher", "hero",
    "jamesbond", "kangaroo", "krull", "kung_fu_master", "ms_pacman", "pong", "private_eye",
    "qbert", "road_runner", "seaquest", "up_n_down",
)  # fmt: skip


def _rom_keys() -> dict[str, str]:
    """Installed ROM ids keyed without underscores, so "MsPacman" and "ms_pacman" both match."""
    return {game.replace("_", ""): game for game in roms.get_all_rom_ids()}


def game_id(name: str) -> str | None:
    """The ALE ROM id for `pong`, `ms_pacman`, `MsPacman`, `ALE/Pong-v5`, `PongNoFrameskip-v4`."""
    base = re.sub(r"-v\d+$", "", name.removeprefix("ALE/"))
    base = re.sub(r"(NoFrameskip|Deterministic)$", "", base)
    return _rom_keys().get(base.replace("_", "").lower())


def closest_games(name: str, *, n: int = 3) -> list[str]:
    """The n installed games whose names are most like `name`."""
    keys = _rom_keys()
    query = name.replace("_", "").lower()
    ranked = sorted(keys, key=lambda key: -difflib.SequenceMatcher(None, query, key).ratio())
    return [keys[key] for key in ranked[:n]]


def _ale_env(game: str, num_envs: int, *, image_size: int, grayscale: bool, noop_max: int,
             max_episode_frames: int) -> AtariVectorEnv:
    return AtariVectorEnv(
        game,
        num_envs,
        img_height=image_size,
        img_width=image_size,
        grayscale=grayscale,
        # One frame per step: the agent stacks frames by the replay's rule (ALE's stacks
        # would start an episode with zeros and run on across life losses).
        stack_num=1,
        frameskip=FRAMESKIP,
        maxpool=True,
        repeat_action_probability=0.0,
        full_action_space=False,
        noop_max=noop_max,
        max_num_frames_per_episode=max_episode_frames,
        reward_clipping=False,
        use_fire_reset=False,
        episodic_life=False,
        # ALE's life_loss_info would set `terminated` at every life loss too, and under
        # SAME_STEP autoreset a game over is then told apart only by guessing from `lives`.
        # We keep `terminated` = game over and derive life losses from `lives` ourselves.
        life_loss_info=False,
        # SAME_STEP: the step that ends an episode already returns the next episode's first
        # obs (ale_py 0.12 does it right), so NEXT_STEP's extra reset step never exists.
        autoreset_mode=AutoresetMode.SAME_STEP,
    )


def resolve(game: str, *, mode: str, image_size: int, grayscale: bool, frame_stack: int,
            noop_max: int, max_episode_frames: int) -> EnvSpec:
    """The spec of `game`, read from a one-copy env (building one takes a few 0.1 s)."""
    ale = _ale_env(game, 1, image_size=image_size, grayscale=grayscale, noop_max=noop_max,
                   max_episode_frames=max_episode_frames)
    ale.close()
    return _spec(ale, game, mode=mode, image_size=image_size, grayscale=grayscale,
                 frame_stack=frame_stack, noop_max=noop_max,
                 max_episode_frames=max_episode_frames)


def _spec(ale: AtariVectorEnv, game: str, *, mode: str, image_size: int, grayscale: bool,
          frame_stack: int, noop_max: int, max_episode_frames: int) -> EnvSpec:
    actions = [action.name for action in ale.ale.get_action_set()]
    settings = {
        "game": game,
        "mode": mode,
        "image": f"{image_size}x{image_size} {'grayscale' if grayscale else 'RGB'}",
        "frame_stack": frame_stack,
        "stack_reset": STACK_RESET,
        "frameskip": FRAMESKIP,
        "maxpool_last_two_frames": True,
        "repeat_action_probability": 0.0,
        "full_action_space": False,
        "minimal_action_set_size": len(actions),
        "actions": actions,
        "noop_max": noop_max,
        "fire_reset": False,
        "life_loss_terminal": mode == "train",
        "max_episode_frames": max_episode_frames,
        # ALE counts the cap in agent steps x frameskip; reset no-ops are not counted.
        "max_episode_steps": math.ceil(max_episode_frames / FRAMESKIP),
        "reward_clipping": False,
        "autoreset": "same_step",
    }
    channels = 1 if grayscale else 3
    return EnvSpec(name=f"atari:{game}", kind="atari",
                   frame_shape=(image_size, image_size, channels),
                   frame_dtype="uint8", stack=frame_stack, num_actions=len(actions),
                   is_image=True, settings=settings)


class AtariEnv(VectorEnv):
    """`num_envs` copies of one game; copy i is seeded with seed + i."""

    def __init__(self, game: str, *, num_envs: int, seed: int, mode: str, image_size: int,
                 grayscale: bool, frame_stack: int, noop_max: int, max_episode_frames: int):
        self._ale = _ale_env(game, num_envs, image_size=image_size, grayscale=grayscale,
                             noop_max=noop_max, max_episode_frames=max_episode_frames)
        spec = _spec(self._ale, game, mode=mode, image_size=image_size, grayscale=grayscale,
                     frame_stack=frame_stack, noop_max=noop_max,
                     max_episode_frames=max_episode_frames)
        super().__init__(spec, num_envs=num_envs, mode=mode)
        self._seed = seed
        self._lives = np.zeros(num_envs, np.int32)  # [N] lives after the last step

    def _reset(self) -> np.ndarray:
        obs, info = self._ale.reset(seed=self._seed)
        self._seed = None  # later resets continue each copy's stream
        self._lives = info["lives"]
        return self._frames(obs)

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        obs, reward, terminated, truncated, info = self._ale.step(actions)
        done = terminated | truncated  # [N] bool; those copies were reset within this step
        # Where done, `lives` already belongs to the new episode, so compare only elsewhere.
        life_loss = ~done & (info["lives"] < self._lives)  # [N] bool
        self._lives = info["lives"]
        return self._frames(obs), reward.astype(np.float32), terminated, truncated, life_loss

    def _frames(self, obs: np.ndarray) -> np.ndarray:
        """ALE's [N, 1, H, W, 3] RGB or [N, 1, H, W] grayscale -> [N, H, W, C] uint8."""
        return obs[:, 0].reshape(self.num_envs, *self.spec.frame_shape)

    def close(self) -> None:
        self._ale.close()
