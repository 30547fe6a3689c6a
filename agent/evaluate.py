"""Evaluation: the greedy search policy on eval-mode envs (no life-loss terminal, no
exploration noise), a fixed number of whole episodes, written to DIR/eval.json; or, to
set beside it, the sampled policy that acts in training (DIR/eval_sampled.json)."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import jax
import numpy as np

from agent import checkpoint as checkpoint_lib
from agent import scores
from agent.acting import Actor, make_act
from agent.config import Config
from agent.envs import make_env
from world_model import make_model


@functools.lru_cache(maxsize=4)
def _eval_act(graphdef, search_cfg, discount: float, continuous: bool, greedy: bool):
    # Cached so periodic evaluations reuse one compiled search.
    return make_act(graphdef, search_cfg, discount=discount, greedy=greedy,
                    continuous=continuous)


@dataclasses.dataclass
class Trajectory:
    """One recorded evaluation episode (its first `record_steps` steps)."""

    obs: np.ndarray  # [T, *obs_shape] what the model saw
    actions: np.ndarray  # [T] int32; Box actions [T, D] float32
    rewards: np.ndarray  # [T] float32 raw reward after each action
    policies: np.ndarray  # [T, A] search policy (Box actions: over the arms)
    values: np.ndarray  # [T] search root value
    terminal: bool  # the recording reaches the episode's terminal (not a time-limit cut)
    arms: np.ndarray | None = None  # Box actions: [T, S, D] the search's arms (pre-tanh)


@dataclasses.dataclass
class Episodes:
    returns: list[float]
    video: list[np.ndarray]  # frames of the first episode, if asked for
    trajectories: list[Trajectory]  # if asked for


def run_episodes(cfg: Config, graphdef, params, env_kwargs: dict, *, episodes: int,
                 seed: int, record_video: bool = False, record_steps: int = 0,
                 greedy: bool = True) -> Episodes:
    """Plays exactly `episodes` whole episodes with the greedy search policy (`greedy`
    False: the exploring one that acts at the end of training, at its last temperature).

    `record_video` keeps the first episode's frames; `record_steps` > 0 keeps each
    episode's first `record_steps` steps as a Trajectory (held-out data for `dreams`).
    """
    num_envs = min(episodes, cfg.log.eval_envs)
    env = make_env(cfg.env.name, num_envs=num_envs, seed=seed, mode="eval", **env_kwargs)
    act = _eval_act(graphdef, cfg.search, cfg.train.discount, env.spec.continuous, greedy)
    temperature = 0.0 if greedy else cfg.train.temperatures[-1]
    # Each env plays its own quota, so short episodes are not over-represented.
    quota = np.full(num_envs, episodes // num_envs) + (np.arange(num_envs) < episodes % num_envs)
    returns: list[list[float]] = [[] for _ in range(num_envs)]
    recording: list[list[tuple]] = [[] for _ in range(num_envs)]
    trajectories = []
    actor = Actor(env, act)
    video = [actor.frames[0]] if record_video else []
    rng = jax.random.key(seed)
    while any(len(r) < q for r, q in zip(returns, quota, strict=True)):
        rng, act_rng = jax.random.split(rng)
        obs = actor.obs
        plan = jax.device_get(actor.plan(params, act_rng, temperature))
        step, _ = actor.step(plan)
        ended = step.terminated | step.truncated
        for i in range(num_envs):
            if record_steps and len(recording[i]) < record_steps:
                recording[i].append((obs[i], plan.action[i], step.reward[i],
                                     plan.action_weights[i], plan.root_value[i],
                                     None if plan.arms is None else plan.arms[i]))
            if ended[i] and len(returns[i]) < quota[i]:
                returns[i].append(float(step.episode_return[i]))
                if record_steps:
                    terminal = (step.episode_length[i] <= record_steps
                                and bool(step.terminated[i]))
                    trajectories.append(_trajectory(recording[i], terminal))
            if ended[i]:
                recording[i] = []
        if record_video and not returns[0]:
            video.append(step.obs[0])
    env.close()
    return Episodes(returns=[r for per_env in returns for r in per_env], video=video,
                    trajectories=trajectories)


def _trajectory(steps: list[tuple], terminal: bool) -> Trajectory:
    *fields, arms = zip(*steps, strict=True)
    obs, actions, rewards, policies, values = (np.stack(x) for x in fields)
    return Trajectory(obs=obs, actions=actions, rewards=rewards.astype(np.float32),
                      policies=policies, values=values.astype(np.float32),
                      terminal=terminal,
                      arms=None if arms[0] is None else np.stack(arms))


def write_eval(run_dir: Path, env_name: str, env_steps: int, returns: list[float], *,
               name: str = "eval.json") -> dict:
    result = {
        "env": env_name,
        "env_steps": int(env_steps),
        "episodes": len(returns),
        "returns": [float(r) for r in returns],
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
    }
    game = scores.atari_game(env_name)
    if game is not None:
        result["hns"] = float(scores.human_normalized(game, result["mean_return"]))
    path = Path(run_dir) / name
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)
    return result


def summary_line(result: dict) -> str:
    line = (f"eval {result['env']} after {result['env_steps']} env steps: mean return "
            f"{result['mean_return']:.2f} ± {result['std_return']:.2f} over "
            f"{result['episodes']} episodes")
    if "hns" in result:
        line += f", human-normalised {result['hns']:.3f}"
    return line


def load_model(run_dir: Path):
    """(cfg, graphdef, params, env_steps, spec) of a run's latest checkpoint."""
    cfg, _ = checkpoint_lib.read_config(run_dir)
    env = make_env(cfg.env.name, num_envs=1, seed=0, mode="eval", **cfg.env.keywords())
    spec = env.spec
    env.close()
    graphdef, params = make_model(cfg.model, spec.obs_shape, spec.num_actions, seed=cfg.seed,
                                  action_dim=spec.action_dim)
    checkpointer = checkpoint_lib.Checkpointer(run_dir, read_only=True)
    params, counters = checkpointer.restore_params(params)
    checkpointer.close()
    return cfg, graphdef, params, counters["env_steps"], spec


def evaluate_run(run_dir: Path, *, episodes: int | None = None, video: bool = False,
                 seed: int = 1_000, sampled: bool = False) -> dict:
    """`dreamzero evaluate`: loads the latest checkpoint, plays, writes eval.json (with
    `sampled`, the training's exploring policy, eval_sampled.json: the run's result
    stays the greedy one)."""
    cfg, graphdef, params, env_steps, _ = load_model(run_dir)
    played = run_episodes(cfg, graphdef, params, cfg.env.keywords(),
                          episodes=episodes or cfg.log.eval_episodes, seed=seed,
                          record_video=video, greedy=not sampled)
    result = write_eval(run_dir, cfg.env.name, env_steps, played.returns,
                        name="eval_sampled.json" if sampled else "eval.json")
    print(("sampled policy: " if sampled else "") + summary_line(result))
    if video:
        path = _write_video(Path(run_dir) / "eval.gif", played.video)
        print(f"wrote {path}" if path else "no video: this env's observations are not images")
    return result


def _write_video(path: Path, frames: list[np.ndarray]) -> Path | None:
    import imageio.v3 as iio

    if not frames or frames[0].ndim != 3:
        return None
    images = np.stack(frames)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    # Tiny frames (the built-in game) are scaled up so the GIF is watchable.
    scale = max(1, 192 // images.shape[1])
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    iio.imwrite(path, images, duration=50, loop=0)
    return path
