"""check_env: resolve an ENV, show its spec and protocol, and time a random-policy rollout."""

from __future__ import annotations

import json
import time

import numpy as np

import agent.envs as envs


def check_env(name: str, *, steps: int = 1000, seed: int = 0, num_envs: int = 4,
              **env_keywords) -> str:
    """Prints and returns a report on ENV: its spec and settings first, then `steps`
    random-policy env steps (over `num_envs` copies) with episodes finished, mean return and
    env steps per second.

    env_keywords are make_env's (mode, image_size, frame_stack, noop_max, max_episode_frames).
    Raises EnvError (one line naming the fix) when ENV cannot be used.
    """
    spec = envs.resolve_spec(name, **env_keywords)
    lines = [
        f"env            {spec.name}  (kind {spec.kind})",
        f"env obs        {spec.frame_shape} {spec.frame_dtype} (one frame)",
        f"model obs      {spec.obs_shape} (stack {spec.stack}, built by the agent)",
        (f"actions        Box({spec.action_dim},) in [-1, 1], rescaled to [low, high] "
         f"(settings)" if spec.continuous else f"actions        {spec.num_actions}"),
        "settings",
        *(f"  {key:<27} {json.dumps(value)}" for key, value in spec.settings.items()),
    ]
    print("\n".join(lines), flush=True)  # the spec shows before the rollout runs
    rng = np.random.default_rng(seed)
    returns, lengths, train_terminals = [], [], 0
    low, high = np.inf, -np.inf
    with envs.make_env(name, num_envs=num_envs, seed=seed, **env_keywords) as env:
        obs = env.reset()  # [N, *frame]
        _check_obs(obs, spec, num_envs)
        start = time.perf_counter()
        vector_steps = max(1, -(-steps // num_envs))
        for _ in range(vector_steps):
            step = env.step(rng.uniform(-1, 1, (num_envs, spec.action_dim)) if spec.continuous
                            else rng.integers(spec.num_actions, size=num_envs))
            _check_obs(step.obs, spec, num_envs)
            ended = step.terminated | step.truncated
            returns += step.episode_return[ended].tolist()
            lengths += step.episode_length[ended].tolist()
            train_terminals += int(step.train_terminal.sum())
            low, high = min(low, step.reward.min()), max(high, step.reward.max())
        seconds = time.perf_counter() - start
    mean_return = f"{np.mean(returns):.2f}" if returns else "n/a"
    mean_length = f"{np.mean(lengths):.1f}" if lengths else "n/a"
    rollout = [
        f"random rollout {vector_steps * num_envs} env steps over {num_envs} envs, seed {seed}",
        f"  episodes finished  {len(returns)}  (mean return {mean_return}, "
        f"mean length {mean_length})",
        f"  train terminals    {train_terminals}  (game overs + life losses in train mode)",
        f"  reward range       [{low:g}, {high:g}]",
        f"  speed              {vector_steps * num_envs / seconds:,.0f} env steps/s",
    ]
    print("\n".join(rollout))
    return "\n".join(lines + rollout)


def _check_obs(obs: np.ndarray, spec: envs.EnvSpec, num_envs: int) -> None:
    expected = (num_envs, *spec.frame_shape)
    if obs.shape != expected or obs.dtype != np.dtype(spec.frame_dtype):
        raise envs.EnvError(f"{spec.name!r} produced obs {obs.shape} {obs.dtype}, expected "
                            f"{expected} {spec.frame_dtype}; fix the env's observations")
