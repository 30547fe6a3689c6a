"""Checkpoint cost at a full replay: the frames written incrementally against the whole
replay in every checkpoint, in one run.

    .venv/bin/python scripts/bench_checkpoint.py [--preset atari100k] [--env pong] \
        [--before REV] [--repeats 2] [--json PATH]

"Before" is `agent/checkpoint.py` of a git revision (`--before`, default: the last commit
that wrote the whole replay into every checkpoint), "after" the working tree; both save
the same state and replay into fresh directories, taking turns. The replay is the
preset's, every column written with real frames of random play; then, as in training,
one checkpoint interval of steps (the preset's `checkpoint_interval` updates, at its
replay ratio) is added and a second checkpoint written. For each checkpoint: the
seconds the save call holds the training loop, the seconds until it is on disk, and the
bytes it added to the run directory.
"""

import argparse
import dataclasses
import json
import math
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from bench_speedups import compare, full_replay, module_at, play_randomly

from agent import checkpoint as checkpoint_lib
from agent import config as config_lib
from agent import replay as replay_lib
from agent.train import build

BEFORE = "63436e9"  # the last commit whose checkpoints held the whole replay


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=list(config_lib.PRESETS), default="atari100k")
    parser.add_argument("--env", default="pong", help="env name (default: pong)")
    parser.add_argument("--before", default=BEFORE, help="git revision of the baseline")
    parser.add_argument("--repeats", type=int, default=2, help="checkpoint pairs of each kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args()


def disk_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())


def advance(replay, frames, *, steps: int):
    """`steps` more steps of every env, their frames taken in turn from `frames`."""
    add = jax.jit(replay_lib.add, donate_argnums=0)
    num_envs, num_actions = replay.policies.shape[0], replay.policies.shape[2]
    uniform = np.full((num_envs, num_actions), 1 / num_actions, np.float32)
    zeros = np.zeros(num_envs, np.float32)
    for t in range(steps):
        replay = add(replay, frames=frames[t * num_envs % len(frames):][:num_envs],
                     actions=np.zeros(num_envs, np.int32), rewards=zeros,
                     ends=np.zeros(num_envs, bool), terminals=np.zeros(num_envs, bool),
                     starts=np.zeros(num_envs, bool),
                     policies=uniform, values=zeros)
    return jax.block_until_ready(replay)


def timed_save(checkpointer, step: int, state, replay) -> np.ndarray:
    """(seconds the save call holds the caller, seconds until on disk, bytes added)."""
    before = disk_bytes(checkpointer.directory)
    counters = dict(env_steps=step, updates=step, episodes=0, replay_written=step)
    start = time.perf_counter()
    checkpointer.save(step, state=state, replay=replay, counters=counters)
    held = time.perf_counter() - start
    checkpointer.wait_until_finished()  # the background write
    return np.array([held, time.perf_counter() - start,
                     disk_bytes(checkpointer.directory) - before])


def main():
    args = parse_args()
    cfg = config_lib.preset(args.preset)
    cfg = dataclasses.replace(cfg, seed=args.seed,
                              env=dataclasses.replace(cfg.env, name=args.env))
    config_lib.validate(cfg)
    old = module_at(args.before, "agent/checkpoint.py")
    env, _, _, state, replay = build(cfg)
    num_envs = cfg.env.num_envs
    replay, frames = play_randomly(env, replay, steps=2_000 // num_envs, seed=args.seed)
    env.close()
    replay = full_replay(replay, frames)
    interval = math.ceil(cfg.log.checkpoint_interval / cfg.train.replay_ratio / num_envs)
    later = advance(jax.tree.map(jnp.copy, replay), frames[::-1], steps=interval)
    replay_mib = sum(leaf.nbytes for leaf in jax.tree.leaves(replay)) / 2**20
    print(f"jax {jax.__version__}, {jax.devices()[0]}; preset {cfg.preset}, env {cfg.env.name}: "
          f"replay {replay_mib:,.1f} MiB in memory, every column written; then "
          f"{interval * num_envs:,} env steps (one checkpoint interval) more")

    totals = {kind: np.zeros((2, 3)) for kind in ("before", "after")}
    for _ in range(args.repeats):
        for kind, module in (("before", old), ("after", checkpoint_lib)):
            with tempfile.TemporaryDirectory() as tmp:
                checkpointer = module.Checkpointer(Path(tmp))
                for i, (step, saved) in enumerate(
                        ((cfg.replay.capacity, replay),
                         (cfg.replay.capacity + interval * num_envs, later))):
                    totals[kind][i] += timed_save(checkpointer, step, state, saved)
                checkpointer.close()
    results = []
    for i, name in enumerate(("first checkpoint (the whole replay)",
                              "next checkpoint, one interval later")):
        before, after = totals["before"][i] / args.repeats, totals["after"][i] / args.repeats
        results += [compare(f"{name}: save call holds the loop", before[0], after[0], "s"),
                    compare(f"{name}: until on disk", before[1], after[1], "s"),
                    compare(f"{name}: bytes added", before[2] / 2**20, after[2] / 2**20,
                            "MiB")]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
