"""The training loop: act -> store -> (sample -> reanalyse -> update) -> log/eval/save.

Acting, storing and the update are pure jitted functions of arrays; this file only puts
them in order. Rerunning `train` with the same run directory resumes from the last
checkpoint: counters, replay, optimiser and RNG continue exactly, and the episodes that
were in progress restart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

import search
from agent import checkpoint as checkpoint_lib
from agent import config as config_lib
from agent import dreams
from agent import evaluate as evaluate_lib
from agent import replay as replay_lib
from agent.acting import Actor, make_act, num_arms
from agent.config import Config, ConfigError
from agent.envs import EnvSpec, make_env
from agent.metrics import MetricsLog
from agent.reanalyze import make_batch
from world_model import compute_loss, decayed, frame_mean, make_model, with_frame_mean

_DREAM_HORIZON = 10
_DREAM_RECORD_STEPS = 200


class NonFiniteLossError(RuntimeError):
    """Raised when a loss turns NaN/inf; the message names the step and the last good
    checkpoint (which is never overwritten by a non-finite state)."""


class Preempted(Exception):
    """The run stopped on request (SIGTERM, Ctrl-C) after checkpointing the step it had
    reached."""

    def __init__(self, env_steps: int):
        super().__init__(f"stopped at env step {env_steps}")
        self.env_steps = env_steps


@chex.dataclass(frozen=True)
class TrainState:
    params: chex.ArrayTree
    target_params: chex.ArrayTree
    opt_state: chex.ArrayTree
    rng: jax.Array


def make_optimizer(cfg: Config) -> optax.GradientTransformation:
    o, total = cfg.optim, max(1, cfg.total_updates)
    warmup = int(o.warmup_fraction * total)
    decay_at = max(1, int(o.lr_decay_fraction * total) - warmup)
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, o.learning_rate, max(1, warmup)),
         optax.piecewise_constant_schedule(o.learning_rate, {decay_at: o.lr_decay_factor})],
        [warmup],
    )
    if o.optimizer == "sgd":
        step = optax.chain(optax.add_decayed_weights(o.weight_decay, mask=decayed),
                           optax.sgd(schedule, momentum=o.momentum))
    else:
        step = optax.adamw(schedule, weight_decay=o.weight_decay, mask=decayed)
    return optax.chain(optax.clip_by_global_norm(o.max_grad_norm), step)


def _copy(tree):
    # A real copy: the update donates its state, and donating one buffer twice fails.
    return jax.tree.map(jnp.copy, tree)


def augment(rng, obs, mean=None):
    """Random shift (replicate-pad 4, crop back) and intensity, per image (DrQ / SPR).

    obs [B, T, H, W, C] uint8 -> float32 on the same 0..255 scale. With `mean` [H, W, C]
    (a centring model's frame mean, 0..255) the shift and intensity apply to each image's
    difference from it: shifting the whole frame would move the static background off the
    mean the model subtracts, and its edges would outweigh what moves (on Pong 20x). That
    result is not clipped to 0..255: the model subtracts the mean again.
    """
    b, t, height, width, _ = obs.shape
    shift_rng, scale_rng = jax.random.split(rng)
    images = obs if mean is None else obs.astype(jnp.float32) - mean
    padded = jnp.pad(images, ((0, 0), (0, 0), (4, 4), (4, 4), (0, 0)), mode="edge")
    offsets = jax.random.randint(shift_rng, (b, t, 2), 0, 9)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0),
                                     (height, width, image.shape[-1]))

    shifted = jax.vmap(jax.vmap(crop))(padded, offsets).astype(jnp.float32)
    scale = 1.0 + 0.05 * jnp.clip(jax.random.normal(scale_rng, (b, t, 1, 1, 1)), -2.0, 2.0)
    if mean is not None:
        return mean + shifted * scale
    return jnp.clip(shifted * scale, 0.0, 255.0)


def gradient_step(graphdef, optimizer, loss_cfg, params, opt_state, batch):
    """Loss, gradient and optimiser step -> (params, opt_state, metrics, priorities)."""
    grad_fn = jax.value_and_grad(compute_loss, argnums=1, has_aux=True)
    (_, (metrics, priorities)), grads = grad_fn(graphdef, params, batch, loss_cfg)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
    return optax.apply_updates(params, updates), opt_state, metrics, priorities


def draw_samples(cfg: Config, replay: replay_lib.Replay, rng, betas) -> replay_lib.Sample:
    """One prioritised sample per update of a call: leaves [M, B] for betas [M]."""
    t = cfg.train

    def draw(key, beta):
        return replay_lib.sample(replay, key, batch_size=t.batch_size,
                                 lookahead=t.unroll_steps + t.td_steps,
                                 alpha=cfg.replay.priority_alpha, beta=beta)

    return jax.vmap(draw)(jax.random.split(rng, betas.shape[0]), betas)


def gradient_steps(graphdef, optimizer, loss_cfg, params, opt_state,
                   replay: replay_lib.Replay, batches, samples):
    """The M gradient steps of a call in turn, each writing back its batch's priorities.

    batches, samples: leaves [M, B, ...]. Returns (params, opt_state, replay, metrics [M]).
    A Python loop, not lax.scan: in a loop body XLA:CPU runs the backward convolutions on
    a slow path (jax-ml/jax#12868), 10x slower at atari100k size even for a one-step
    loop. The cost is a compile time that grows with M.
    """
    table, max_priority, metrics = replay.priorities, replay.max_priority, []
    for i in range(jax.tree.leaves(samples)[0].shape[0]):
        params, opt_state, step_metrics, priorities = gradient_step(
            graphdef, optimizer, loss_cfg, params, opt_state,
            jax.tree.map(lambda x, i=i: x[i], batches))
        table, max_priority = replay_lib.set_priorities(
            table, max_priority, jax.tree.map(lambda x, i=i: x[i], samples), priorities)
        metrics.append(step_metrics)
    metrics = jax.tree.map(lambda *xs: jnp.stack(xs), *metrics)
    return (params, opt_state, replay.replace(priorities=table, max_priority=max_priority),
            metrics)


BATCH_AXIS = "batch"


def make_mesh(cfg: Config) -> Mesh | None:
    """The data-parallel mesh over `train.devices` local devices; None for one device,
    which keeps the single-device program exactly as it is without a mesh."""
    available = jax.local_devices()
    count = cfg.train.devices or len(available)
    if count > len(available):
        raise ConfigError(f"--train.devices {count}: only {len(available)} "
                          f"{available[0].platform} device(s) here; use at most that")
    if cfg.train.batch_size % count:
        raise ConfigError(f"--train.batch-size {cfg.train.batch_size} does not split over "
                          f"{count} devices: use a multiple of {count} or set --train.devices")
    return Mesh(np.array(available[:count]), (BATCH_AXIS,)) if count > 1 else None


def replicate(tree, mesh: Mesh | None):
    """A full copy of `tree` on every device of `mesh` (unchanged without one)."""
    return tree if mesh is None else jax.device_put(tree, NamedSharding(mesh, P()))


def make_update(cfg: Config, graphdef, optimizer, spec: EnvSpec, mesh: Mesh | None = None):
    """update(state, replay, betas [M]) -> (state, replay, metrics [M]): M =
    `updates_per_call` gradient steps in one jitted call.

    The M batches are sampled from the priorities at the call's start and reanalysed
    together: one search over M times the roots does the same model calls as M searches
    in 1/M of the sequential simulation steps, and the target network is the same for all
    (`target_update_interval` is a multiple of M).

    With a `mesh` (state and replay replicated on it), the sampled windows are split over
    its devices: each gathers and reanalyses its share and computes its share of the loss,
    and XLA sums the gradients across devices (the loss is a mean over the batch).
    """
    recurrent_fn = search.model_recurrent_fn(
        graphdef, discount=cfg.train.discount,
        num_arms=num_arms(cfg.search, continuous=spec.continuous))

    def split(tree, spec):
        if mesh is None:
            return tree
        return jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, spec))

    def update(state: TrainState, replay: replay_lib.Replay, betas):
        rng, sample_rng, reanalyse_rng, augment_rng = jax.random.split(state.rng, 4)
        samples = draw_samples(cfg, replay, sample_rng, betas)
        flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), samples)  # [M * B]
        flat = split(flat, P(BATCH_AXIS))
        batch = make_batch(cfg, graphdef, state.target_params, replay, flat, reanalyse_rng,
                           stack=spec.stack, is_image=spec.is_image,
                           clip_rewards=cfg.train.clips_rewards(spec.kind),
                           recurrent_fn=recurrent_fn)
        if cfg.train.augment and spec.is_image:
            mean = frame_mean(graphdef, state.params)  # [H, W, C] in 0..1, or None
            batch = batch.replace(observations=augment(
                augment_rng, batch.observations, None if mean is None else 255.0 * mean))
        batches = jax.tree.map(lambda x: x.reshape(betas.shape[0], -1, *x.shape[1:]), batch)
        batches = split(batches, P(None, BATCH_AXIS))  # each gradient step's batch is split
        params, opt_state, replay, metrics = gradient_steps(
            graphdef, optimizer, cfg.loss, state.params, state.opt_state, replay, batches,
            samples)
        return state.replace(params=params, opt_state=opt_state, rng=rng), replay, metrics

    return jax.jit(update, donate_argnums=(0, 1))


def temperature(cfg: Config, env_steps: int) -> float:
    """Acting temperature: the schedule's values over equal parts of training."""
    temps = cfg.train.temperatures
    part = min(len(temps) - 1, env_steps * len(temps) // cfg.train.env_steps)
    return temps[part]


def updates_due(cfg: Config, env_steps: int) -> int:
    """Updates that should have happened by `env_steps`: none before start_steps, then
    spread evenly so the run ends with replay_ratio * env_steps updates."""
    t = cfg.train
    if env_steps < t.start_steps:
        return 0
    done = (env_steps - t.start_steps) / max(1, t.env_steps - t.start_steps)
    return int(round(min(1.0, done) * cfg.total_updates))


@dataclasses.dataclass
class _Window:
    """What happened since the last log line."""
    returns: list = dataclasses.field(default_factory=list)
    lengths: list = dataclasses.field(default_factory=list)
    metrics: list = dataclasses.field(default_factory=list)
    start_time: float = dataclasses.field(default_factory=time.perf_counter)
    start_env_steps: int = 0
    start_updates: int = 0


def build(cfg: Config):
    """A fresh run's pieces: (train env, graphdef, optimizer, TrainState, empty Replay).

    Checks that the replay fits in memory before anything large is allocated.
    """
    env = make_env(cfg.env.name, num_envs=cfg.env.num_envs, seed=cfg.seed, mode="train",
                   **cfg.env.keywords())
    spec = env.spec
    frame_dtype = np.dtype(spec.frame_dtype)
    # A stored policy is over the Discrete actions, or over the search's arms.
    policy_size = num_arms(cfg.search, continuous=True) if spec.continuous else spec.num_actions
    replay_lib.check_memory(capacity=cfg.replay.capacity, frame_shape=spec.frame_shape,
                            frame_dtype=frame_dtype, num_actions=policy_size,
                            action_dim=spec.action_dim)
    graphdef, params = make_model(cfg.model, spec.obs_shape, spec.num_actions, seed=cfg.seed,
                                  action_dim=spec.action_dim)
    optimizer = make_optimizer(cfg)
    state = TrainState(params=params, target_params=_copy(params),
                       opt_state=optimizer.init(params),
                       rng=jax.random.key_data(jax.random.key(cfg.seed)))
    replay = replay_lib.init(num_envs=cfg.env.num_envs, capacity=cfg.replay.capacity,
                             frame_shape=spec.frame_shape, frame_dtype=frame_dtype,
                             num_actions=policy_size, action_dim=spec.action_dim)
    return env, graphdef, optimizer, state, replay


def train(cfg: Config, *, stop: threading.Event | None = None) -> dict:
    """Runs (or resumes) a training run; returns the final evaluation.

    Once `stop` is set (by a signal handler), the loop checkpoints the step it is at and
    raises Preempted; set during the final evaluation, it lets the run finish.
    """
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    env_kwargs = cfg.env.keywords()
    mesh = make_mesh(cfg)
    env, graphdef, optimizer, state, replay = build(cfg)
    spec = env.spec
    counters = {"env_steps": 0, "updates": 0, "episodes": 0}

    checkpointer = checkpoint_lib.Checkpointer(run_dir)
    if checkpointer.latest_step() is not None:
        saved, _ = checkpoint_lib.read_config(run_dir)
        differences = checkpoint_lib.config_mismatch(config_lib.to_dict(saved), cfg)
        if differences:
            raise ConfigError(
                f"{run_dir} holds a run with another config ({'; '.join(differences)}): "
                "use a new --logdir or the same settings"
            )
        state, replay, counters = checkpointer.restore(state=state, replay=replay)
        counters.pop("replay_written")
        replay = replay_lib.close_segments(replay)
        print(f"resuming {run_dir} at {counters['env_steps']} env steps, "
              f"{counters['updates']} updates")
        # Fresh env episodes: seeding by progress keeps resumed runs off the old episodes.
        env.close()
        env = make_env(cfg.env.name, num_envs=cfg.env.num_envs,
                       seed=cfg.seed + counters["env_steps"], mode="train", **env_kwargs)
    checkpoint_lib.write_config(run_dir, cfg, {"env_spec": spec.to_dict()})
    log = MetricsLog(run_dir, resume_env_steps=counters["env_steps"])

    state, replay = replicate((state, replay), mesh)
    act = make_act(graphdef, cfg.search, discount=cfg.train.discount, greedy=False,
                   continuous=spec.continuous)
    update = make_update(cfg, graphdef, optimizer, spec, mesh)
    add = jax.jit(replay_lib.add, donate_argnums=0)

    actor = Actor(env, act)
    window = _Window(start_env_steps=counters["env_steps"], start_updates=counters["updates"])
    last_saved = counters["updates"]
    bar = tqdm(total=cfg.train.env_steps, initial=counters["env_steps"], unit="step",
               disable=not cfg.log.progress, dynamic_ncols=True, desc=spec.name)
    beta0, per_call = cfg.replay.priority_beta, cfg.train.updates_per_call

    # Checkpoints are written in the background; closing the checkpointer waits for the
    # last one, also when the loop fails (the final one overlaps the final evaluation).
    try:
        while counters["env_steps"] < cfg.train.env_steps:
            act_rng, next_rng = jax.random.split(state.rng)
            state = state.replace(rng=next_rng)
            plan = actor.plan(state.params, act_rng, temperature(cfg, counters["env_steps"]))
            previous_steps = counters["env_steps"]
            counters["env_steps"] += cfg.env.num_envs

            # The updates due after this step are dispatched before the envs step, so the
            # device runs them while the host steps the envs; they sample the replay as it
            # was before this step.
            while counters["updates"] + per_call <= updates_due(cfg, counters["env_steps"]):
                if counters["updates"] == 0 and cfg.model.center_frames:
                    state = _center_frames(state, replay, graphdef, mesh)
                done_then = counters["updates"] + np.arange(per_call)
                betas = beta0 + (1 - beta0) * done_then / max(1, cfg.total_updates)
                state, replay, metrics = update(state, replay, jnp.asarray(betas, jnp.float32))
                counters["updates"] += per_call
                window.metrics.append(metrics)
                if counters["updates"] % cfg.train.target_update_interval == 0:
                    state = state.replace(target_params=_copy(state.params))

            step, transition = actor.step(plan)
            replay = add(replay, **transition)
            ended = step.terminated | step.truncated
            counters["episodes"] += int(ended.sum())
            window.returns += step.episode_return[ended].tolist()
            window.lengths += step.episode_length[ended].tolist()
            bar.update(cfg.env.num_envs)

            def crossed(interval: int, before=previous_steps, now=counters["env_steps"]) -> bool:
                return before // interval != now // interval

            done = counters["env_steps"] >= cfg.train.env_steps
            # An evaluation writes its own line where the two intervals do not align.
            evaluate_now = bool(cfg.log.eval_interval) and crossed(cfg.log.eval_interval)
            if crossed(cfg.log.log_interval) or done or evaluate_now:
                record = _summarise(window, counters, checkpointer)
                if evaluate_now and not done:
                    record |= _periodic_evaluation(cfg, graphdef, state.params, env_kwargs,
                                                   env_kind=spec.kind, seed=counters["env_steps"])
                log.write(record)
                if record.get("episode_return") is not None:
                    bar.set_postfix(ret=f"{record['episode_return']:.1f}",
                                    sps=f"{record['sps']:.0f}", ups=f"{record['ups']:.1f}")
                window = _Window(start_env_steps=counters["env_steps"],
                                 start_updates=counters["updates"])
            # Between two steps the state is whole: a stop request is checkpointed here.
            stopping = stop is not None and stop.is_set()
            if (counters["updates"] - last_saved >= cfg.log.checkpoint_interval or done
                    or stopping):
                _check_finite(window, checkpointer)
                # For the record (and tests): transitions ever stored, equal to env_steps.
                checkpointer.save(counters["env_steps"], state=state, replay=replay,
                                  counters=counters | {"replay_written": int(replay.written)
                                                       * cfg.env.num_envs})
                last_saved = counters["updates"]
            if stopping:
                raise Preempted(counters["env_steps"])

        bar.close()
        env.close()
        log.close()
        returns = _evaluate(cfg, graphdef, state.params, env_kwargs,
                            episodes=cfg.log.eval_episodes, seed=1_000)
    finally:
        checkpointer.close()
    result = evaluate_lib.write_eval(run_dir, cfg.env.name, counters["env_steps"], returns)
    print(evaluate_lib.summary_line(result))
    return result


def _center_frames(state: TrainState, replay: replay_lib.Replay, graphdef, mesh) -> TrainState:
    """Both networks centre their inputs on the mean frame of the play stored so far (the
    start steps', before the first update)."""
    stored = min(int(replay.written), replay.length)
    frames = replay.frames[:, :stored].reshape(-1, *replay.frames.shape[2:])  # [N * T, H, W, C]
    params = with_frame_mean(graphdef, state.params, frames)
    return replicate(state.replace(params=params, target_params=_copy(params)), mesh)


def _summarise(window: _Window, counters: dict, checkpointer) -> dict:
    """The log record of a window; raises NonFiniteLossError on a NaN/inf loss."""
    elapsed = max(1e-9, time.perf_counter() - window.start_time)
    record = {
        "env_steps": counters["env_steps"],
        "updates": counters["updates"],
        "episodes": counters["episodes"],
        "sps": (counters["env_steps"] - window.start_env_steps) / elapsed,
        "ups": (counters["updates"] - window.start_updates) / elapsed,
    }
    if window.returns:
        record["episode_return"] = float(np.mean(window.returns))
        record["episode_length"] = float(np.mean(window.lengths))
    for key, values in _check_finite(window, checkpointer).items():
        record[key] = float(values.mean())
    return record


def _check_finite(window: _Window, checkpointer) -> dict:
    """The window's metrics as numpy arrays [updates]; raises NonFiniteLossError, before
    anything is saved, if one of them is NaN/inf."""
    if not window.metrics:
        return {}
    stacked = jax.device_get(jax.tree.map(lambda *xs: jnp.concatenate(xs), *window.metrics))
    for key, values in stacked.items():
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            step = window.start_updates + int(bad[0]) + 1
            last = checkpointer.latest_step()
            # A resume must keep the optimiser settings, so changing them needs a new logdir.
            where = (f"the last good checkpoint is at env step {last} in "
                     f"{checkpointer.directory} (the same command resumes from it); to lower "
                     "--optim.learning-rate or --optim.max-grad-norm use a new --logdir"
                     if last is not None else
                     f"there is no checkpoint yet in {checkpointer.directory}; lower "
                     "--optim.learning-rate or --optim.max-grad-norm and rerun")
            raise NonFiniteLossError(f"{key} became {values[bad[0]]} at update {step}; {where}")
    return stacked


def _periodic_evaluation(cfg: Config, graphdef, params, env_kwargs: dict, *, env_kind: str,
                         seed: int) -> dict:
    """A tenth of the final evaluation's episodes (at least one parallel batch), and the
    dream fidelity on those same held-out episodes."""
    episodes = min(cfg.log.eval_episodes, max(cfg.log.eval_envs, cfg.log.eval_episodes // 10))
    played = evaluate_lib.run_episodes(cfg, graphdef, params, env_kwargs, episodes=episodes,
                                       seed=seed, record_steps=_DREAM_RECORD_STEPS)
    record = {"eval/mean_return": float(np.mean(played.returns))}
    # Skipped when every held-out episode is shorter than the dream horizon.
    with contextlib.suppress(ValueError):
        record |= dreams.fidelity_metrics(graphdef, params, played.trajectories,
                                          horizon=_DREAM_HORIZON, discount=cfg.train.discount,
                                          clip_rewards=cfg.train.clips_rewards(env_kind))
    return record


def _evaluate(cfg: Config, graphdef, params, env_kwargs: dict, *, episodes: int,
              seed: int) -> list[float]:
    return evaluate_lib.run_episodes(cfg, graphdef, params, env_kwargs, episodes=episodes,
                                     seed=seed).returns
