"""Can a preset's world model see an env? It trains alone on uniform random play, and held-out
play says whether it learnt the rewards and values.

    .venv/bin/python scripts/probe_world_model.py --preset atari100k-cpu --env pong \
        [--updates 3000] [--play-steps 2500] [--seed 0] [-- TRAIN FLAGS]
        # e.g. -- --model.center-frames True --model.keypoints 0

No search and no policy learning: what the RL loop adds on top of the model cannot hide
a model that maps every frame to one latent. The play is the training env's (8 envs,
life loss a terminal), stacked as the agent stacks it; the targets are the rewards as
training sees them (clipped where the preset clips) and, as values, each step's discounted
return to its segment's end (unknown, and masked, where the play stops first and the
discount has not yet shrunk what follows below 5%). The policy targets are uniform.
Batches are the preset's (`train.batch_size` windows of `train.unroll_steps`), its loss
and optimiser, without augmentation.

Every `--eval-every` updates, on 1,024 windows of play of other seeds: the correlation of
the predicted rewards with the real ones over the unroll steps, the mean predicted reward
where the real one is -1, 0 and +1, the correlation of the root value with the real
discounted return, and the spread of the root latents over the windows (std over windows,
mean over units; `latent/state_std` in training). With `model.center_frames` the frame
mean is measured on all of the training play first (the trainer measures it on the play
stored before its first update).
"""

import argparse
import dataclasses
import functools
import json
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from agent import config as config_lib
from agent import replay as replay_lib
from agent.cli import parse_train_args
from agent.envs import make_env
from agent.train import make_optimizer
from world_model import (
    Batch,
    compute_loss,
    initial_inference,
    make_model,
    recurrent_inference,
    with_frame_mean,
)

NUM_ENVS = 8
TEST_WINDOWS = 1_024


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=list(config_lib.PRESETS), default="atari100k-cpu")
    parser.add_argument("--env", help="env name (default: the preset's)")
    parser.add_argument("--updates", type=int, default=3_000)
    parser.add_argument("--play-steps", type=int, default=2_500,
                        help="random-play steps of each of the 8 training envs")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    flags = ["--preset", args.preset, "--seed", str(args.seed)]
    flags += ["--env", args.env] if args.env else []
    # After a bare `--`: any `dreamzero train` flag on top of the preset.
    return args, parse_train_args(flags + argv[split + 1:])


def random_play(cfg: config_lib.Config, steps: int, seed: int) -> dict:
    """Uniform random play of NUM_ENVS training envs: [T, N, ...] observations (stacked),
    single frames, actions, rewards, segment ends and discounted returns."""
    env = make_env(cfg.env.name, num_envs=NUM_ENVS, seed=seed, mode="train",
                   **cfg.env.keywords())
    if env.spec.continuous:
        raise SystemExit("probe_world_model.py: Discrete actions only")
    rng = np.random.default_rng(seed)
    frames = env.reset()
    stack = replay_lib.FrameStack(frames, cfg.env.frame_stack)
    is_image = len(env.spec.frame_shape) == 3
    play = {key: [] for key in ("obs", "frames", "actions", "rewards", "ends")}
    for _ in range(steps):
        actions = rng.integers(env.spec.num_actions, size=NUM_ENVS)
        play["obs"].append(replay_lib.merge_stack(stack.frames, is_image=is_image))
        play["frames"].append(frames)
        play["actions"].append(actions)
        step = env.step(actions)
        play["rewards"].append(step.reward)
        ends = step.train_terminal | step.truncated
        play["ends"].append(ends)
        frames = step.obs
        stack.push(frames, ends)
    env.close()
    play = {key: np.stack(value) for key, value in play.items()}
    if cfg.train.clips_rewards(env.spec.kind):
        play["rewards"] = np.clip(play["rewards"], -1.0, 1.0)
    returns, after = np.zeros_like(play["rewards"]), np.zeros(NUM_ENVS)
    ends_ahead, ended = np.zeros_like(play["ends"]), np.zeros(NUM_ENVS, bool)
    for t in range(steps - 1, -1, -1):
        after = play["rewards"][t] + cfg.train.discount * np.where(play["ends"][t], 0.0, after)
        ended |= play["ends"][t]
        returns[t], ends_ahead[t] = after, ended
    # A return is known where its segment ends within the play, or the discount has shrunk
    # the steps after the play's end below 5% of a reward.
    horizon = math.ceil(math.log(0.05) / math.log(cfg.train.discount))
    play["returns"] = returns
    play["known"] = ends_ahead | (np.arange(steps) < steps - horizon)[:, None]
    play["num_actions"] = env.spec.num_actions
    return play


def window_starts(play: dict, unroll: int) -> np.ndarray:
    """[W, 2] (t, n) of every window whose unroll crosses no segment end before its last step."""
    ends = play["ends"]
    starts = [(t, n) for t in range(len(ends) - unroll) for n in range(NUM_ENVS)
              if not ends[t:t + unroll - 1, n].any()]
    return np.array(starts)


def make_batch(play: dict, starts: np.ndarray, unroll: int) -> Batch:
    t, n = starts[:, 0], starts[:, 1:]
    steps = t[:, None] + np.arange(unroll + 1)  # [B, K+1]
    size = len(starts)
    ended = play["ends"][steps[:, :unroll], n]  # [B, K]
    alive = np.concatenate([np.ones((size, 1)), np.cumprod(1 - ended, axis=1)], axis=1)
    return Batch(
        observations=jnp.asarray(play["obs"][steps, n]),  # [B, K+1, *obs_shape]
        actions=jnp.asarray(play["actions"][steps[:, :unroll], n], jnp.int32),  # [B, K]
        target_rewards=jnp.asarray(play["rewards"][steps[:, :unroll], n] * alive[:, :unroll],
                                   jnp.float32),
        target_values=jnp.asarray(play["returns"][steps, n] * alive, jnp.float32),
        target_policies=jnp.full((size, unroll + 1, play["num_actions"]),
                                 1.0 / play["num_actions"]),
        mask=jnp.asarray(alive, jnp.float32),
        value_mask=jnp.asarray(play["known"][steps, n], jnp.float32),
        reward_mask=jnp.ones((size, unroll)),
        weights=jnp.ones((size,)),
    )


def main():
    args, cfg = parse_args()
    unroll, batch_size = cfg.train.unroll_steps, cfg.train.batch_size
    train_play = random_play(cfg, args.play_steps, seed=args.seed)
    test_play = random_play(cfg, args.play_steps, seed=10_000 + args.seed)
    train_starts = window_starts(train_play, unroll)
    rng = np.random.default_rng(args.seed)
    test_starts = window_starts(test_play, unroll)
    test_starts = test_starts[test_play["known"][test_starts[:, 0], test_starts[:, 1]]]
    if not len(test_starts):
        raise SystemExit("probe_world_model.py: no held-out window has a known return: "
                         "raise --play-steps")
    test_starts = test_starts[rng.permutation(len(test_starts))[:TEST_WINDOWS]]
    test_batch = make_batch(test_play, test_starts, unroll)

    graphdef, params = make_model(cfg.model, train_play["obs"].shape[2:],
                                  train_play["num_actions"], seed=args.seed)
    frames = train_play["frames"]
    params = with_frame_mean(graphdef, params, jnp.asarray(frames.reshape(-1, *frames.shape[2:])))
    # The preset's optimiser and schedule, over this probe's updates.
    optimizer = make_optimizer(dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, env_steps=args.updates, replay_ratio=1.0)))

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def update(params, opt_state, batch):
        grads, (metrics, _) = jax.grad(compute_loss, argnums=1, has_aux=True)(
            graphdef, params, batch, cfg.loss)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    @jax.jit
    def predict(params, batch):  # -> root values [B], rewards [B, K], root latents [B, F]
        out = initial_inference(graphdef, params, batch.observations[:, 0])
        values, latents = out.value, out.state.latent.reshape(len(out.value), -1)
        rewards = []
        for k in range(unroll):
            out = recurrent_inference(graphdef, params, out.state, batch.actions[:, k])
            rewards.append(out.reward)
        return values, jnp.stack(rewards, axis=1), latents

    def evaluate(params, updates: int) -> dict:
        values, rewards, latents = (np.asarray(x) for x in predict(params, test_batch))
        real = np.asarray(test_batch.mask[:, 1:]) > 0
        true_rewards, rewards = np.asarray(test_batch.target_rewards)[real], rewards[real]
        true_values = np.asarray(test_batch.target_values[:, 0])
        record = {"updates": updates,
                  "reward_corr": _corr(rewards, true_rewards),
                  "value_corr": _corr(values, true_values),
                  "latent_std": float(latents.std(axis=0).mean())}
        for sign, name in ((-1, "reward_at_-1"), (0, "reward_at_0"), (1, "reward_at_+1")):
            chosen = true_rewards == sign
            record[name] = float(rewards[chosen].mean()) if chosen.any() else None
        return record

    print(f"{cfg.env.name}: {args.play_steps} x {NUM_ENVS} random-play steps, "
          f"{len(train_starts)} training windows; held out: rewards nonzero at "
          f"{np.mean(np.asarray(test_batch.target_rewards) != 0):.3f} of unroll steps, "
          f"returns' std {np.std(np.asarray(test_batch.target_values[:, 0])):.3f}")
    print(_line(evaluate(params, 0)), flush=True)
    opt_state = optimizer.init(params)
    for done in range(1, args.updates + 1):
        picked = train_starts[rng.integers(len(train_starts), size=batch_size)]
        params, opt_state, metrics = update(params, opt_state,
                                            make_batch(train_play, picked, unroll))
        if done % args.eval_every == 0 or done == args.updates:
            record = evaluate(params, done) | {
                "loss/reward": float(metrics["loss/reward"]),
                "loss/value": float(metrics["loss/value"])}
            print(_line(record), flush=True)


def _line(record: dict) -> str:
    return json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()})


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation; None where either side is constant (no signal to follow)."""
    if a.std() < 1e-12 or b.std() < 1e-12:
        return None
    return float(np.corrcoef(a, b)[0, 1])


if __name__ == "__main__":
    main()
