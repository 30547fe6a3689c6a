"""Times a preset's training loop phase by phase and projects the wall time of a full run.

    .venv/bin/python scripts/bench_train.py --preset atari100k --env pong \
        [--env-steps N] [--updates N] [--batch-size B] [--devices 1 2 ...] [--json PATH] \
        [-- TRAIN FLAGS]       # e.g. -- --model.channels 16 --env.image-size 48
    XLA_FLAGS=--xla_force_host_platform_device_count=2 \
        .venv/bin/python scripts/bench_train.py --preset quickstart --devices 1 2

Builds exactly what `agent.train.train` builds (env, model, optimiser, replay, the jitted
`act`, `add` and fused `update`) and runs a fixed amount of work after compilation:

1. acting: `--env-steps` agent steps (all envs together) of act -> env step -> replay add,
   as in the training loop; these real steps are also what fills the replay;
2. the fused `make_update` step, `--updates` calls of `train.updates_per_call` updates:
   this gives updates/s;
3. taking turns with 2., the same call split into its parts (replay samples,
   reanalysis, augmentation, the gradient steps with their priority write-back), each
   jitted on its own and timed to completion, so that the sum of the parts can be set
   against the fused step;
4. one orbax checkpoint of the state and the whole replay (the part that holds up the
   loop; the write goes on in the background), amortised over the checkpoint interval;
5. with `--devices`: the fused update again on a data-parallel mesh of each number of
   local devices given (`--train.devices`), from the same state and replay, and its time
   per update against the first count's. On CPU, XLA_FLAGS as above makes host devices.

Every jitted function is compiled ahead of its first call; that time is reported apart
and left out of the rates (the first execution after it is timed). The projection of a
full run is: the preset's env steps at the measured acting rate + replay_ratio x env
steps updates at the measured fused rate + its checkpoints. Periodic and final
evaluation are not part of it.
"""

import argparse
import collections
import contextlib
import dataclasses
import functools
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import search
from agent import checkpoint as checkpoint_lib
from agent import config as config_lib
from agent import replay as replay_lib
from agent.acting import Actor, make_act, num_arms
from agent.cli import parse_train_args
from agent.reanalyze import make_batch
from agent.train import (
    augment,
    build,
    draw_samples,
    gradient_steps,
    make_mesh,
    make_update,
    replicate,
    temperature,
)

# Acting steps (every env steps once) and update calls per preset when not given: enough to
# average over, small enough to finish in minutes on a 2-core CPU (one atari100k update at
# batch 256 takes one to two minutes there, so it gets one of each kind).
DEFAULT_WORK = {"smoke": (200, 20), "quickstart": (100, 10), "atari100k": (32, 1),
                "atari100k-cpu": (100, 10), "dmc": (100, 10)}

ACTING_PHASES = ("acting search", "env stepping", "replay add", "host<->device copies")
UPDATE_PHASES = ("replay sampling", "reanalysis", "augmentation", "gradient update")


class Clock:
    """Wall seconds per named phase, with compilation kept out of them.

    Every jitted function runs through `compiled`, which compiles it ahead of its first
    call and books that time under its own name in `compile_s`; a span subtracts the
    compiling that happened inside it. Running only compiled executables also means no
    call can silently retrace.
    """

    def __init__(self):
        self.seconds = collections.defaultdict(float)
        self.compile_s = {}
        self._compiling = 0.0

    @contextlib.contextmanager
    def span(self, name):
        # Callers block on device results inside the span: jax dispatch is asynchronous.
        start, compiling = time.perf_counter(), self._compiling
        yield
        self.seconds[name] += time.perf_counter() - start - (self._compiling - compiling)

    def compiled(self, name, jitted, **static):
        """`jitted` with its `static` keyword arguments bound, compiled on the first call."""
        executable = None

        def call(*args, **kwargs):
            nonlocal executable
            if executable is None:
                start = time.perf_counter()
                executable = jitted.lower(*args, **static, **kwargs).compile()
                self.compile_s[name] = time.perf_counter() - start
                self._compiling += self.compile_s[name]
            return executable(*args, **kwargs)

        return call


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=list(config_lib.PRESETS), default="atari100k")
    parser.add_argument("--env", help="env name (default: the preset's: pong or catch)")
    parser.add_argument("--env-steps", type=int,
                        help="agent steps to time, all envs together (default: a few dozen "
                             "acting steps per env, by preset)")
    parser.add_argument("--updates", type=int,
                        help="fused update calls to time (each of --updates-per-call "
                             "updates), and as many split ones (default: by preset)")
    parser.add_argument("--updates-per-call", type=int,
                        help="override the preset's train.updates_per_call")
    parser.add_argument("--batch-size", type=int,
                        help="override the preset's batch size (to fit a slow machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--devices", type=int, nargs="+",
                        help="also time the update split over each of these device counts")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    # After a bare `--`: any `dreamzero train` flag on top of the preset (`--model.channels 16`).
    args.overrides = argv[split + 1:]
    return args


def make_config(args) -> config_lib.Config:
    cfg = parse_train_args(["--preset", args.preset, *args.overrides])
    if args.env:
        cfg = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, name=args.env))
    if args.batch_size:
        cfg = dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, batch_size=args.batch_size))
    if args.updates_per_call:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(
            cfg.train, updates_per_call=args.updates_per_call))
    cfg = dataclasses.replace(cfg, seed=args.seed)
    config_lib.validate(cfg)
    return cfg


def run_acting(cfg, actor, clock, add, params, replay, *, steps: int):
    """`steps` iterations of the training loop's acting step; returns the replay."""
    rng = jax.random.key_data(jax.random.key(cfg.seed + 1))
    with clock.span("acting wall"):
        for _ in range(steps):
            act_rng, rng = jax.random.split(rng)
            with clock.span("acting search"):  # with the upload of the observations
                plan = jax.block_until_ready(actor.plan(params, act_rng, temperature(cfg, 0)))
            with clock.span("env stepping"):  # and the host-side stacking for the next search
                _, transition = actor.step(plan)
            with clock.span("host<->device copies"):
                # The training loop hands these to `add` as numpy arrays; uploading them
                # here first keeps the copy out of the add's time.
                uploaded = jax.block_until_ready(jax.device_put(transition))
            with clock.span("replay add"):
                replay = jax.block_until_ready(add(replay, **uploaded))
    return replay


def make_split_update(cfg, graphdef, optimizer, spec, clock):
    """The fused update's parts, each jitted alone: split(state, replay, betas)."""
    t = cfg.train
    recurrent_fn = search.model_recurrent_fn(
        graphdef, discount=t.discount, num_arms=num_arms(cfg.search, continuous=spec.continuous))
    draw = clock.compiled("draw_samples", jax.jit(functools.partial(draw_samples, cfg)))
    reanalyse = clock.compiled("make_batch", jax.jit(functools.partial(
        make_batch, cfg, graphdef, stack=spec.stack, is_image=spec.is_image,
        clip_rewards=cfg.train.clips_rewards(spec.kind), recurrent_fn=recurrent_fn)))
    shift = clock.compiled("augment", jax.jit(augment))
    # The replay donated as in the fused step: otherwise XLA would copy the whole buffer.
    learn = clock.compiled("gradient_steps", jax.jit(functools.partial(
        gradient_steps, graphdef, optimizer, cfg.loss), donate_argnums=2))

    def split(state, replay, betas):
        rng, sample_rng, reanalyse_rng, augment_rng = jax.random.split(state.rng, 4)
        with clock.span("replay sampling"):
            samples = jax.block_until_ready(draw(replay, sample_rng, betas))
        with clock.span("reanalysis"):
            flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), samples)
            batch = jax.block_until_ready(
                reanalyse(state.target_params, replay, flat, reanalyse_rng))
        if t.augment and spec.is_image:
            with clock.span("augmentation"):
                batch = batch.replace(observations=jax.block_until_ready(
                    shift(augment_rng, batch.observations)))
        with clock.span("gradient update"):
            batches = jax.tree.map(lambda x: x.reshape(len(betas), -1, *x.shape[1:]), batch)
            params, opt_state, replay, _ = jax.block_until_ready(
                learn(state.params, state.opt_state, replay, batches, samples))
        return state.replace(params=params, opt_state=opt_state, rng=rng), replay

    return split


def time_checkpoint(state, replay, counters: dict) -> tuple[float, int]:
    """Seconds one Checkpointer.save into a temp dir holds the caller up, and the bytes it
    wrote (in the background, waited for after the timing)."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpointer = checkpoint_lib.Checkpointer(Path(tmp))
        start = time.perf_counter()
        checkpointer.save(counters["env_steps"], state=state, replay=replay,
                          counters=counters)
        seconds = time.perf_counter() - start
        checkpointer.close()
        size = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
    return seconds, size


def time_devices(cfg, graphdef, optimizer, spec, state, replay, betas, *, counts: list[int],
                 calls: int) -> list[dict]:
    """Seconds per update of the fused update on a mesh of each device count (one device: no
    mesh), each from a copy of the same state and replay; compiled ahead, then one untimed
    call."""
    rows = []
    for count in counts:
        mesh = make_mesh(dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, devices=count)))
        s, r = replicate(jax.tree.map(jnp.copy, (state, replay)), mesh)
        update = make_update(cfg, graphdef, optimizer, spec, mesh)
        start = time.perf_counter()
        compiled = update.lower(s, r, betas).compile()
        compile_s = time.perf_counter() - start
        s, r, _ = jax.block_until_ready(compiled(s, r, betas))
        start = time.perf_counter()
        for _ in range(calls):
            s, r, _ = jax.block_until_ready(compiled(s, r, betas))
        update_s = (time.perf_counter() - start) / (calls * cfg.train.updates_per_call)
        rows.append(dict(devices=count, update_s=update_s, compile_s=compile_s))
    return rows


def memory_peak() -> tuple[str, int]:
    stats = jax.devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        return "device peak_bytes_in_use", stats["peak_bytes_in_use"]
    # Linux reports ru_maxrss in KiB.
    return "process peak RSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main():
    args = parse_args()
    cfg = make_config(args)
    default_steps, default_updates = DEFAULT_WORK[cfg.preset]
    num_envs = cfg.env.num_envs
    acting_steps = math.ceil((args.env_steps or default_steps * num_envs) / num_envs)
    num_calls = args.updates or default_updates
    per_call = cfg.train.updates_per_call
    num_updates = num_calls * per_call
    lookahead = cfg.train.unroll_steps + cfg.train.td_steps
    if acting_steps < lookahead + 1:
        raise SystemExit(f"--env-steps must give at least {lookahead + 1} steps per env "
                         f"(unroll + td + 1) so the replay can be sampled: use "
                         f">= {(lookahead + 1) * num_envs}")

    device = jax.devices()[0]
    load_before = os.getloadavg()
    print(f"jax {jax.__version__}, backend {jax.default_backend()}: {device}, "
          f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f} at start")
    print(f"preset {cfg.preset}, env {cfg.env.name}, {num_envs} envs, batch "
          f"{cfg.train.batch_size}, search {cfg.search.kind} x {cfg.search.num_simulations}, "
          f"{cfg.train.updates_per_call} update(s) per call")
    preset_batch = config_lib.preset(cfg.preset).train.batch_size
    if cfg.train.batch_size != preset_batch:
        print(f"NOTE: batch size {cfg.train.batch_size} instead of the preset's {preset_batch}: "
              "update times and the projection are for the smaller batch")

    env, graphdef, optimizer, state, replay = build(cfg)
    spec = env.spec
    clock = Clock()
    act = clock.compiled("act", make_act(graphdef, cfg.search, discount=cfg.train.discount,
                                         greedy=False, continuous=spec.continuous))
    add = clock.compiled("replay add", jax.jit(replay_lib.add, donate_argnums=0))
    update = clock.compiled("update", make_update(cfg, graphdef, optimizer, spec))
    split = make_split_update(cfg, graphdef, optimizer, spec, clock)
    betas = jnp.full(per_call, cfg.replay.priority_beta, jnp.float32)

    print(f"acting: {acting_steps} steps x {num_envs} envs ...", flush=True)
    replay = run_acting(cfg, Actor(env, act), clock, add, state.params, replay,
                        steps=acting_steps)
    env.close()
    print(f"{num_calls} fused and {num_calls} split call(s) of {per_call} update(s) ...",
          flush=True)
    # Taking turns, so that a change in the machine's load hits both alike.
    for _ in range(num_calls):
        with clock.span("fused updates"):
            state, replay, _ = jax.block_until_ready(update(state, replay, betas))
        state, replay = split(state, replay, betas)
    print("checkpoint ...", flush=True)
    replay_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(replay))
    checkpoint_s, checkpoint_bytes = time_checkpoint(state, replay, dict(
        env_steps=acting_steps * num_envs, updates=2 * num_updates, episodes=0,
        replay_written=acting_steps * num_envs))
    memory_kind, memory_bytes = memory_peak()
    device_rows = []
    if args.devices:
        print(f"the update on {', '.join(map(str, args.devices))} device(s) ...", flush=True)
        device_rows = time_devices(cfg, graphdef, optimizer, spec, state, replay, betas,
                                   counts=args.devices, calls=num_calls)
    load_after = os.getloadavg()

    # Means per acting step (all envs) and per update, times their counts in a full run.
    seconds = clock.seconds
    act_step_s = seconds["acting wall"] / acting_steps
    update_s = seconds["fused updates"] / num_updates
    parts_s = sum(seconds.get(name, 0.0) for name in UPDATE_PHASES) / num_updates
    full_acting_steps = math.ceil(cfg.train.env_steps / num_envs)
    full_updates = cfg.total_updates
    full_checkpoints = full_updates // cfg.log.checkpoint_interval + 1  # and the final one
    acting_unit = (full_acting_steps, "acting steps")
    update_unit = (full_updates, "updates")
    rows = [(name, seconds[name] / acting_steps, *acting_unit) for name in ACTING_PHASES]
    rows.append(("other acting (rng split, python)",
                 act_step_s - sum(seconds[name] for name in ACTING_PHASES) / acting_steps,
                 *acting_unit))
    rows += [(name, seconds[name] / num_updates, *update_unit)
             for name in UPDATE_PHASES if name in seconds]
    rows.append(("fused step minus sum of parts", update_s - parts_s, *update_unit))
    rows.append(("checkpoint save (amortised)", checkpoint_s, full_checkpoints, "checkpoints"))
    projected_s = sum(each * count for _, each, count, _ in rows)
    compile_s = clock.compile_s
    run_compile_s = compile_s["act"] + compile_s["replay add"] + compile_s["update"]
    env_sps = 1 / act_step_s * num_envs
    ups = 1 / update_s

    print(f"\nload average {load_after[0]:.2f} at the end")
    print("compile (not in the rates): " + ", ".join(
        f"{name} {each:.1f} s" for name, each in compile_s.items()))
    print(f"env steps/s (search + env + replay add): {env_sps:,.1f}   "
          f"({acting_steps * num_envs} steps in {seconds['acting wall']:.2f} s)")
    print(f"updates/s (fused, batch {cfg.train.batch_size}): {ups:,.3f}   "
          f"({num_updates} in {seconds['fused updates']:.2f} s)")
    print(f"sum of update parts {1e3 * parts_s:,.1f} ms vs fused step {1e3 * update_s:,.1f} ms "
          f"({parts_s / update_s:.2f}x)")
    print(f"checkpoint: {checkpoint_s:.2f} s, {checkpoint_bytes / 2**20:,.1f} MiB on disk for "
          f"a replay of {replay_bytes / 2**20:,.1f} MiB in memory "
          f"({acting_steps * num_envs:,} of {cfg.replay.capacity:,} steps filled), every "
          f"{cfg.log.checkpoint_interval:,} updates")
    print(f"memory: {memory_kind} {memory_bytes / 2**30:.2f} GiB")
    print(f"\nprojected full run ({cfg.train.env_steps:,} env steps, {full_updates:,} updates, "
          f"no evaluation): {projected_s:,.1f} s = {projected_s / 3600:.2f} h, plus "
          f"{run_compile_s:.0f} s of compilation\n")
    print("| phase | ms each | per full run | projected s | share |")
    print("|---|--:|--:|--:|--:|")
    for name, each, count, unit in rows:
        print(f"| {name} | {1e3 * each:,.1f} | {count:,} {unit} | {each * count:,.1f} "
              f"| {100 * each * count / projected_s:.1f}% |")
    print(f"| **total** | | | **{projected_s:,.1f}** | 100% |")
    if device_rows:
        base = device_rows[0]["update_s"]
        print(f"\n| devices ({device.platform}) | ms per update | vs {device_rows[0]['devices']} "
              "| compile s |")
        print("|--:|--:|--:|--:|")
        for row in device_rows:
            print(f"| {row['devices']} | {1e3 * row['update_s']:,.1f} | "
                  f"{row['update_s'] / base:.2f}x | {row['compile_s']:.1f} |")

    if args.json:
        args.json.write_text(json.dumps(dict(
            preset=cfg.preset, env=cfg.env.name, num_envs=num_envs,
            batch_size=cfg.train.batch_size, preset_batch_size=preset_batch,
            device=str(device), backend=jax.default_backend(), jax=jax.__version__,
            load_average=dict(start=load_before[0], end=load_after[0]),
            timed=dict(env_steps=acting_steps * num_envs, updates=num_updates),
            env_steps_per_s=env_sps, updates_per_s=ups, compile_s=compile_s,
            update_parts_s=parts_s, fused_update_s=update_s, checkpoint_s=checkpoint_s,
            checkpoint_bytes=checkpoint_bytes, replay_bytes=replay_bytes,
            memory=dict(kind=memory_kind, bytes=memory_bytes),
            projected_full_run_s=projected_s, projected_compile_s=run_compile_s,
            devices=device_rows,
            phases=[dict(name=name, seconds_each=each, per_full_run=count, unit=unit,
                         projected_s=each * count) for name, each, count, unit in rows],
        ), indent=2) + "\n")


if __name__ == "__main__":
    main()
