"""Dream fidelity: how far ahead the world model's imagination can be trusted.

On held-out real trajectories (evaluation episodes, never stored in replay) the model
starts from the real observation at t and unrolls k = 1..K steps along the real
actions. Per depth k it is compared with what really happened:

- reward error   |dreamed reward of step k - real (clipped) reward r_{t+k-1}|
- value error    |dreamed value at k - real discounted return from t+k|
                 (bootstrapped with the search value where a recording stops before
                 the episode's terminal: cut by the recording or by a time limit)
- policy KL      KL(search policy at t+k || dreamed policy at k); for Box actions over
                 the search's arms, the dreamed density renormalised over them
- latent cosine  cos(dreamed latent at k, representation of the real observation t+k)
"""

from __future__ import annotations

import json
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np

from agent import evaluate as evaluate_lib
from world_model import gaussian, initial_inference, recurrent_inference

METRICS = ("reward_error", "value_error", "policy_kl", "latent_cosine")


@chex.dataclass(frozen=True)
class Windows:
    """Every (K+1)-step window of the held-out trajectories."""

    obs: np.ndarray  # [B, K+1, *obs_shape]
    actions: np.ndarray  # [B, K] int32; Box actions [B, K, D] float32
    rewards: np.ndarray  # [B, K] float32 real (clipped) rewards
    returns: np.ndarray  # [B, K+1] float32 real discounted returns
    policies: np.ndarray  # [B, K+1, A] search policies (Box actions: over the arms)
    arms: np.ndarray | None = None  # Box actions: [B, K+1, S, D] the search's arms


def discounted_returns(traj: evaluate_lib.Trajectory, *, discount: float,
                       clip_rewards: bool) -> np.ndarray:
    """[T] real discounted returns; a recording that stops before a terminal (cut by the
    recording's length or by a time limit: the episode went on) is closed with its last
    search value, the best estimate of the unseen rest."""
    rewards = np.clip(traj.rewards, -1, 1) if clip_rewards else traj.rewards
    returns = np.zeros(len(rewards), np.float32)
    running = 0.0 if traj.terminal else float(traj.values[-1])
    last = len(rewards) - (0 if traj.terminal else 1)
    if not traj.terminal:
        returns[last] = running
    for t in range(last - 1, -1, -1):
        running = rewards[t] + discount * running
        returns[t] = running
    return returns


def make_windows(trajectories: list[evaluate_lib.Trajectory], *, horizon: int,
                 discount: float, clip_rewards: bool, max_windows: int = 512) -> Windows:
    """All windows, or `max_windows` evenly spaced ones (bounds memory on Atari)."""
    parts = []
    for traj in trajectories:
        count = len(traj.actions) - horizon
        if count <= 0:
            continue
        returns = discounted_returns(traj, discount=discount, clip_rewards=clip_rewards)
        rewards = np.clip(traj.rewards, -1, 1) if clip_rewards else traj.rewards
        starts = np.arange(count)[:, None]
        k1, k = starts + np.arange(horizon + 1), starts + np.arange(horizon)
        arms = None if traj.arms is None else traj.arms[k1]
        parts.append((traj.obs[k1], traj.actions[k], rewards[k], returns[k1], traj.policies[k1],
                      arms))
    if not parts:
        raise ValueError(f"no held-out trajectory is longer than the horizon {horizon}: "
                         "lower --horizon or collect longer episodes")
    arrays = [None if x[0] is None else np.concatenate(x) for x in zip(*parts, strict=True)]
    keep = np.unique(np.linspace(0, len(arrays[1]) - 1, max_windows).astype(int))
    obs, actions, rewards, returns, policies, arms = (
        None if x is None else x[keep] for x in arrays)
    return Windows(obs=obs, actions=actions, rewards=rewards, returns=returns, policies=policies,
                   arms=arms)


def dream_errors(initial_fn, recurrent_fn, windows: Windows) -> dict[str, jax.Array]:
    """Per-depth errors [K+1] of a model given as two functions returning ModelOutput:
    initial_fn(obs [B, *obs_shape]) and recurrent_fn(state, action [B]). Pure; jit-able."""
    obs = jnp.asarray(windows.obs)
    batch, depth = obs.shape[0], obs.shape[1]
    real = initial_fn(obs.reshape(batch * depth, *obs.shape[2:]))  # the real latents
    real_latents = real.state.latent.reshape(batch, depth, -1).astype(jnp.float32)

    root = initial_fn(obs[:, 0])
    outputs = [root]
    for k in range(depth - 1):
        outputs.append(recurrent_fn(outputs[-1].state, jnp.asarray(windows.actions[:, k])))
    latents = jnp.stack([o.state.latent.reshape(batch, -1) for o in outputs], 1).astype(jnp.float32)
    values = jnp.stack([o.value for o in outputs], 1)  # [B, K+1]
    logits = jnp.stack([o.policy_logits for o in outputs], 1)  # [B, K+1, A]
    rewards = jnp.stack([o.reward for o in outputs[1:]], 1)  # [B, K]

    if windows.arms is None:
        log_policy = jax.nn.log_softmax(logits)
    else:
        log_policy = jax.nn.log_softmax(gaussian.log_prob(logits, jnp.asarray(windows.arms)))
    target = jnp.asarray(windows.policies)
    kl = jnp.sum(jnp.where(target > 0, target * (jnp.log(jnp.maximum(target, 1e-12))
                                                 - log_policy), 0.0), axis=-1)
    cosine = jnp.sum(latents * real_latents, -1) / (
        jnp.linalg.norm(latents, axis=-1) * jnp.linalg.norm(real_latents, axis=-1) + 1e-8)
    reward_error = jnp.abs(rewards - jnp.asarray(windows.rewards)).mean(0)
    return {
        # No reward is dreamed at depth 0: NaN keeps the table's columns aligned.
        "reward_error": jnp.concatenate([jnp.full((1,), jnp.nan), reward_error]),
        "value_error": jnp.abs(values - jnp.asarray(windows.returns)).mean(0),
        "policy_kl": kl.mean(0),
        "latent_cosine": cosine.mean(0),
    }


def model_fidelity(graphdef, params, windows: Windows) -> dict[str, np.ndarray]:
    fidelity = jax.jit(lambda p, w: dream_errors(
        lambda obs: initial_inference(graphdef, p, obs),
        lambda state, action: recurrent_inference(graphdef, p, state, action), w))
    return {k: np.asarray(v) for k, v in fidelity(params, windows).items()}


def fidelity_metrics(graphdef, params, trajectories, *, horizon: int, discount: float,
                     clip_rewards: bool, depths=(1, 5, 10)) -> dict[str, float]:
    """A few depths of the table as flat log keys (`dream/value_error@5`, ...)."""
    windows = make_windows(trajectories, horizon=horizon, discount=discount,
                           clip_rewards=clip_rewards)
    table = model_fidelity(graphdef, params, windows)
    return {f"dream/{name}@{k}": float(table[name][k])
            for name in METRICS for k in depths if k <= horizon}


def format_table(table: dict[str, np.ndarray]) -> str:
    lines = ["  k  " + "  ".join(f"{name:>13}" for name in METRICS)]
    for k in range(len(table["value_error"])):
        lines.append(f"{k:>3}  " + "  ".join(f"{table[name][k]:>13.4f}" for name in METRICS))
    return "\n".join(lines)


def dreams_run(run_dir: Path, *, horizon: int = 10, episodes: int = 4, seed: int = 2_000,
               record_steps: int = 500) -> dict[str, np.ndarray]:
    """`dreamzero dreams`: collect held-out episodes, print and save the per-k table."""
    cfg, graphdef, params, env_steps, spec = evaluate_lib.load_model(run_dir)
    played = evaluate_lib.run_episodes(cfg, graphdef, params, cfg.env.keywords(),
                                       episodes=episodes, seed=seed, record_steps=record_steps)
    windows = make_windows(played.trajectories, horizon=horizon, discount=cfg.train.discount,
                           clip_rewards=cfg.train.clips_rewards(spec.kind))
    table = model_fidelity(graphdef, params, windows)
    print(f"dream fidelity of {run_dir} at {env_steps} env steps "
          f"({len(windows.actions)} windows from {episodes} held-out episodes; "
          f"trained unroll {cfg.train.unroll_steps})")
    print(format_table(table))
    out = Path(run_dir)
    (out / "dreams.json").write_text(json.dumps(
        {"env_steps": env_steps, "horizon": horizon, "windows": len(windows.actions),
         "train_unroll": cfg.train.unroll_steps,
         **{k: [None if np.isnan(x) else float(x) for x in v] for k, v in table.items()}},
        indent=2) + "\n")
    _plot(table, out / "dreams.png", train_unroll=cfg.train.unroll_steps)
    print(f"wrote {out / 'dreams.json'} and {out / 'dreams.png'}")
    return table


def _plot(table: dict[str, np.ndarray], path: Path, *, train_unroll: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.2))
    depths = np.arange(len(table["value_error"]))
    for ax, name in zip(axes, METRICS, strict=True):
        ax.plot(depths, table[name], marker="o")
        ax.axvline(train_unroll, color="grey", linestyle="--", linewidth=1,
                   label="training unroll")
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("dream depth k")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("Dream fidelity on held-out episodes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
