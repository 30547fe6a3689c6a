"""Each speed-up of the training loop against the code it replaced, in one run.

    .venv/bin/python scripts/bench_speedups.py --preset quickstart
    .venv/bin/python scripts/bench_speedups.py --preset atari100k --env pong --batch-size 32

"Before" is the code of a git revision (`--before`, default: the last commit without
these changes), loaded module by module from git; "after" is the working tree. Both run
in this process on the same inputs, taking turns where they are timed repeatedly:

1. reanalysis (`agent/reanalyze.py: make_batch`): one representation pass over the
   steps 0..K+td that serves the search roots and the bootstrap values, against a pass
   for the roots (0..K) and another for the bootstraps (k + horizon);
2. acting compiles (`agent/acting.py: make_act`): the temperature as a traced argument,
   against a static one, over the preset's temperature schedule: compiles and seconds;
3. checkpoints (`agent/checkpoint.py: Checkpointer`): the background save against the
   blocking one, with the replay full of real frames, followed by `--updates` fused
   updates as in the training loop: how long the loop is held up;
4. the loss's unroll (`world_model/losses.py: compute_loss`): the K model steps unrolled
   against a `lax.scan` loop, timed as loss + gradient on a reanalysed batch;
5. updates per call (`agent/train.py: make_update`, `--train.updates-per-call`): M
   updates in one call, their batches reanalysed in one search, against M calls of one
   update each (both from the working tree: M = 1 is the loop as it was);
6. env stepping overlapped with the updates (`agent/train.py: train`): the training
   loop's step (act, env step, replay add, the updates due) with the updates dispatched
   before the envs step, so the device runs them meanwhile, against after it (the loop
   as it was); both with the working tree's jitted functions.

Prints before, after and after / before for each; `--json` also writes them to a file.
"""

import argparse
import dataclasses
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import search
from agent import acting, reanalyze
from agent import checkpoint as checkpoint_lib
from agent import config as config_lib
from agent import replay as replay_lib
from agent.envs import make_env
from agent.train import augment, build, make_update, temperature
from world_model import losses

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "7d3080f"  # the last commit before these speed-ups

# Work per preset when not given: `repeats` of each timed reanalysis and checkpoint,
# `updates` after each checkpoint, `call_repeats` of the updates-per-call comparison,
# `loop_steps` of each loop order. A 2-core CPU does one atari100k update at batch 32 in
# ~4 s, M of them for each repeat and replay_ratio x num_envs (8) per loop step.
DEFAULT_WORK = {
    "smoke": dict(repeats=10, updates=10, call_repeats=5, loop_steps=40),
    "quickstart": dict(repeats=10, updates=10, call_repeats=5, loop_steps=40),
    "atari100k": dict(repeats=4, updates=2, call_repeats=1, loop_steps=2),
}


SECTIONS = ["reanalysis", "loss", "act", "calls", "overlap", "checkpoints"]


def module_at(revision: str, path: str):
    """The module at `path` as it was in `revision` (its imports resolve to today's tree)."""
    source = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    name = f"before_{path.removesuffix('.py').replace('/', '_')}"
    module = types.ModuleType(name)
    module.__file__ = f"{revision}:{path}"
    sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=list(config_lib.PRESETS), default="quickstart")
    parser.add_argument("--env", help="env name (default: the preset's)")
    parser.add_argument("--batch-size", type=int, help="override the preset's batch size")
    parser.add_argument("--repeats", type=int,
                        help="timed reanalysis calls and checkpoints of each kind")
    parser.add_argument("--updates", type=int, help="fused updates after each checkpoint")
    parser.add_argument("--call-repeats", type=int,
                        help="repeats of the updates-per-call comparison")
    parser.add_argument("--loop-steps", type=int, help="training-loop steps of each order")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS,
                        help="run only these comparisons (default: all)")
    parser.add_argument("--updates-per-call", type=int, default=4,
                        help="M to set against one update per call (default: 4)")
    parser.add_argument("--before", default=BEFORE, help="git revision of the baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args()


def make_config(args) -> config_lib.Config:
    cfg = config_lib.preset(args.preset)
    if args.env:
        cfg = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, name=args.env))
    if args.batch_size:
        cfg = dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, batch_size=args.batch_size))
    cfg = dataclasses.replace(cfg, seed=args.seed)
    config_lib.validate(cfg)
    return cfg


def play_randomly(env, replay, *, steps: int, seed: int):
    """`steps` random-action steps of every env into the replay; returns (replay, frames
    [steps * N, *frame]) with the real frames seen, for filling a replay later."""
    rng = np.random.default_rng(seed)
    spec, num_envs = env.spec, env.num_envs
    add = jax.jit(replay_lib.add, donate_argnums=0)
    frames = env.reset()[:, -1]
    starts = np.ones(num_envs, bool)
    seen = []
    uniform = np.full((num_envs, spec.num_actions), 1 / spec.num_actions, np.float32)
    for _ in range(steps):
        actions = rng.integers(0, spec.num_actions, num_envs)
        step = env.step(actions)
        ends = step.train_terminal | step.terminated | step.truncated
        replay = add(replay, frames=frames, actions=actions, rewards=step.reward, ends=ends,
                     terminals=step.train_terminal,
                     starts=starts, policies=uniform, values=np.zeros(num_envs, np.float32))
        seen.append(frames)
        frames, starts = step.obs[:, -1], ends
    return replay, np.concatenate(seen)


def full_replay(replay, frames):
    """The replay with every column written, its frames the real ones repeated."""
    num_envs, length = replay.actions.shape
    reps = -(-num_envs * length // len(frames))
    tiled = np.concatenate([frames] * reps)[: num_envs * length]
    return replay.replace(frames=jnp.asarray(tiled.reshape(replay.frames.shape)),
                          written=jnp.int32(length))


def timed(fn, *args):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def compare(name: str, before: float, after: float, unit: str) -> dict:
    print(f"  {name}: before {before:,.3f} {unit}, after {after:,.3f} {unit}, "
          f"after / before {after / before:.3f}")
    return dict(name=name, before=before, after=after, unit=unit, ratio=after / before)


def bench_reanalysis(cfg, graphdef, state, replay, spec, old, *, repeats: int) -> list[dict]:
    t = cfg.train
    recurrent_fn = search.model_recurrent_fn(graphdef, discount=t.discount)
    sample = jax.jit(functools.partial(
        replay_lib.sample, batch_size=t.batch_size, lookahead=t.unroll_steps + t.td_steps,
        alpha=cfg.replay.priority_alpha))(replay, jax.random.key(1), beta=1.0)
    args = (state.target_params, replay, sample, jax.random.key(2))
    compiled, compile_s = {}, {}
    for kind, module in (("before", old), ("after", reanalyze)):
        jitted = jax.jit(functools.partial(
            module.make_batch, cfg, graphdef, stack=spec.stack, is_image=spec.is_image,
            recurrent_fn=recurrent_fn))
        start = time.perf_counter()
        compiled[kind] = jitted.lower(*args).compile()
        compile_s[kind] = time.perf_counter() - start
    batches = {kind: compiled[kind](*args) for kind in compiled}  # the first runs, untimed
    gap = float(jnp.max(jnp.abs(batches["before"].target_values
                                - batches["after"].target_values)))
    same_obs = bool(jnp.all(batches["before"].observations == batches["after"].observations))
    seconds = {"before": 0.0, "after": 0.0}
    for _ in range(repeats):
        for kind in seconds:
            seconds[kind] += timed(compiled[kind], *args)
    print(f"reanalysis (make_batch, batch {t.batch_size}, {repeats} calls each): same "
          f"observations {same_obs}, largest value-target difference {gap:.2e}")
    rows = [compare("make_batch", seconds["before"] / repeats, seconds["after"] / repeats, "s"),
            compare("make_batch compile", compile_s["before"], compile_s["after"], "s")]
    return rows, batches["after"]


def bench_loss_unroll(cfg, graphdef, params, batch, old, *, repeats: int) -> list[dict]:
    compiled, compile_s = {}, {}
    for kind, module in (("before", old), ("after", losses)):
        grad = jax.jit(jax.value_and_grad(functools.partial(module.compute_loss, graphdef),
                                          has_aux=True), static_argnums=2)
        start = time.perf_counter()
        compiled[kind] = grad.lower(params, batch, cfg.loss).compile()
        compile_s[kind] = time.perf_counter() - start
        jax.block_until_ready(compiled[kind](params, batch))
    seconds = {"before": 0.0, "after": 0.0}
    for _ in range(repeats):
        for kind in seconds:
            seconds[kind] += timed(compiled[kind], params, batch)
    print(f"loss + gradient (batch {cfg.train.batch_size}, {repeats} calls each):")
    return [compare("loss + grad", seconds["before"] / repeats, seconds["after"] / repeats,
                    "s"),
            compare("loss + grad compile", compile_s["before"], compile_s["after"], "s")]


def bench_act_compiles(cfg, graphdef, params, obs, old) -> list[dict]:
    schedule = [temperature(cfg, step) for step in range(0, cfg.train.env_steps,
                                                         max(1, cfg.train.env_steps // 30))]
    figures = {}
    for kind, module in (("before", old), ("after", acting)):
        act = module.make_act(graphdef, cfg.search, discount=cfg.train.discount, greedy=False)
        start = time.perf_counter()
        for value in schedule:
            jax.block_until_ready(act(params, jax.random.key(0), obs, value))
        figures[kind] = (act._cache_size(), time.perf_counter() - start)
    print(f"acting compiles over the temperature schedule {sorted(set(schedule))} "
          f"({len(schedule)} calls, first calls included):")
    return [compare("act compiles", *(figures[k][0] for k in ("before", "after")), "compiles"),
            compare("act seconds", *(figures[k][1] for k in ("before", "after")), "s")]


def with_updates_per_call(cfg, per_call: int):
    return dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, updates_per_call=per_call))


def betas(cfg, per_call: int):
    return jnp.full(per_call, cfg.replay.priority_beta, jnp.float32)


def bench_checkpoints(cfg, update, state, replay, old, *, updates: int,
                      repeats: int) -> list[dict]:
    beta = betas(cfg, 1)
    counters = dict(env_steps=1, updates=0, episodes=0, replay_written=1)
    state, replay, _ = jax.block_until_ready(update(state, replay, beta))  # compiled, warm
    totals = {"before": np.zeros(3), "after": np.zeros(3)}
    for _ in range(repeats):
        for kind, module in (("before", old), ("after", checkpoint_lib)):
            with tempfile.TemporaryDirectory() as tmp:
                checkpointer = module.Checkpointer(Path(tmp))
                start = time.perf_counter()
                checkpointer.save(1, state=state, replay=replay, counters=counters)
                held = time.perf_counter() - start
                for _ in range(updates):
                    state, replay, _ = update(state, replay, beta)
                jax.block_until_ready((state, replay))
                loop = time.perf_counter() - start
                checkpointer.close()  # waits for a background write
                totals[kind] += (held, loop, time.perf_counter() - start)
                size = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
    replay_mib = sum(leaf.nbytes for leaf in jax.tree.leaves(replay)) / 2**20
    print(f"checkpoints (replay {replay_mib:,.0f} MiB in memory, {size / 2**20:,.0f} MiB on "
          f"disk), then {updates} fused updates ({repeats} times each):")
    names = ("save call holds the loop", f"save + {updates} updates",
             "save + updates + rest of the write")
    return [compare(name, before / repeats, after / repeats, "s")
            for name, before, after in zip(names, totals["before"], totals["after"],
                                           strict=True)]


def bench_updates_per_call(cfg, graphdef, optimizer, spec, state, replay, *, per_call: int,
                           repeats: int):
    """-> (figures, state, replay): the updates donate the state and replay given."""
    calls = {}
    for kind, m in (("before", 1), ("after", per_call)):
        update = make_update(with_updates_per_call(cfg, m), graphdef, optimizer, spec)
        start = time.perf_counter()
        calls[kind] = update.lower(state, replay, betas(cfg, m)).compile()
        print(f"  (compiled the {m}-update call in {time.perf_counter() - start:.1f} s)")
        state, replay, _ = jax.block_until_ready(calls[kind](state, replay, betas(cfg, m)))
    seconds = {"before": 0.0, "after": 0.0}
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(per_call):
            state, replay, _ = calls["before"](state, replay, betas(cfg, 1))
        jax.block_until_ready((state, replay))
        seconds["before"] += time.perf_counter() - start
        start = time.perf_counter()
        state, replay, _ = jax.block_until_ready(calls["after"](state, replay,
                                                                betas(cfg, per_call)))
        seconds["after"] += time.perf_counter() - start
    print(f"updates per call: {per_call} calls of 1 update against 1 call of {per_call} "
          f"({repeats} times each, batch {cfg.train.batch_size}):")
    count = repeats * per_call
    figures = compare("seconds per update", seconds["before"] / count,
                      seconds["after"] / count, "s")
    return [figures], state, replay


def bench_env_overlap(cfg, graphdef, optimizer, spec, state, replay, *, steps: int):
    """-> (figures, state, replay): `steps` training-loop steps with the updates dispatched
    after the env step and as many with them dispatched before it, taking turns."""
    num_envs = cfg.env.num_envs
    env = make_env(cfg.env.name, num_envs=num_envs, seed=cfg.seed, mode="train",
                   **cfg.env.keywords())
    act = acting.make_act(graphdef, cfg.search, discount=cfg.train.discount, greedy=False)
    add = jax.jit(replay_lib.add, donate_argnums=0)
    update = make_update(with_updates_per_call(cfg, 1), graphdef, optimizer, spec)
    updates_per_step = max(1, round(cfg.train.replay_ratio * num_envs))
    beta = betas(cfg, 1)
    stack = replay_lib.FrameStack(env.reset()[:, -1], spec.stack)
    starts = np.ones(num_envs, bool)
    env_seconds = {"before": 0.0, "after": 0.0}

    def loop_step(kind, state, replay, starts):
        obs = replay_lib.merge_stack(stack.frames, is_image=spec.is_image)
        plan = act(state.params, jax.random.key(0), obs, 1.0)
        actions = np.asarray(plan.action)

        def updates(state, replay):
            for _ in range(updates_per_step):
                state, replay, _ = update(state, replay, beta)
            return state, replay

        if kind == "after":
            state, replay = updates(state, replay)
        start = time.perf_counter()
        step = env.step(actions)
        env_seconds[kind] += time.perf_counter() - start
        ends = step.train_terminal | step.terminated | step.truncated
        replay = add(replay, frames=stack.frames[:, -1], actions=actions, rewards=step.reward,
                     ends=ends, terminals=step.train_terminal, starts=starts,
                     policies=plan.action_weights,
                     values=plan.root_value)
        stack.push(step.obs[:, -1], ends)
        if kind == "before":
            state, replay = updates(state, replay)
        return state, replay, ends

    for kind in env_seconds:  # compiles and warms up both orders
        state, replay, starts = jax.block_until_ready(loop_step(kind, state, replay, starts))
    env_seconds.update(before=0.0, after=0.0)  # the warm-up's left out
    seconds = {"before": 0.0, "after": 0.0}
    for _ in range(steps):
        for kind in seconds:
            start = time.perf_counter()
            state, replay, starts = jax.block_until_ready(loop_step(kind, state, replay, starts))
            seconds[kind] += time.perf_counter() - start
    env.close()
    print(f"training-loop steps ({steps} of each order, {updates_per_step} update(s) per "
          f"step, env stepping {1e3 * env_seconds['before'] / steps:,.1f} ms of each):")
    return [compare("seconds per loop step", seconds["before"] / steps,
                    seconds["after"] / steps, "s")], state, replay


def main():
    args = parse_args()
    cfg = make_config(args)
    work = DEFAULT_WORK[cfg.preset]
    repeats = args.repeats or work["repeats"]
    updates = args.updates or work["updates"]
    call_repeats = args.call_repeats or work["call_repeats"]
    loop_steps = args.loop_steps or work["loop_steps"]
    print(f"jax {jax.__version__}, backend {jax.default_backend()}: {jax.devices()[0]}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    print(f"preset {cfg.preset}, env {cfg.env.name}, batch {cfg.train.batch_size}, "
          f"before = {args.before}, after = the working tree")
    old = types.SimpleNamespace(
        **{name: module_at(args.before, f"agent/{name}.py")
           for name in ("reanalyze", "acting", "checkpoint")},
        losses=module_at(args.before, "world_model/losses.py"))

    env, graphdef, optimizer, state, replay = build(cfg)
    spec = env.spec
    lookahead = cfg.train.unroll_steps + cfg.train.td_steps
    replay, frames = play_randomly(env, replay, steps=max(4 * lookahead, 64), seed=args.seed)
    obs = replay_lib.merge_stack(env.reset(), is_image=spec.is_image)
    env.close()

    results, only = [], set(args.only)
    if only & {"reanalysis", "loss"}:  # the loss trains on the reanalysed batch
        figures, batch = bench_reanalysis(cfg, graphdef, state, replay, spec, old.reanalyze,
                                          repeats=repeats)
        if "reanalysis" in only:
            results += figures
    if "loss" in only:
        if cfg.train.augment and spec.is_image:  # the loss sees float images, as in training
            batch = batch.replace(observations=augment(jax.random.key(3), batch.observations))
        results += bench_loss_unroll(cfg, graphdef, state.params, batch, old.losses,
                                     repeats=repeats)
    if "act" in only:
        results += bench_act_compiles(cfg, graphdef, state.params, obs, old.acting)
    if "calls" in only:
        figures, state, replay = bench_updates_per_call(
            cfg, graphdef, optimizer, spec, state, replay, per_call=args.updates_per_call,
            repeats=call_repeats)
        results += figures
    if "overlap" in only:
        figures, state, replay = bench_env_overlap(cfg, graphdef, optimizer, spec, state,
                                                   replay, steps=loop_steps)
        results += figures
    if "checkpoints" in only:
        update = make_update(with_updates_per_call(cfg, 1), graphdef, optimizer, spec)
        results += bench_checkpoints(cfg, update, state, full_replay(replay, frames),
                                     old.checkpoint, updates=updates, repeats=repeats)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        args.json.write_text(json.dumps(dict(
            preset=cfg.preset, env=cfg.env.name, batch_size=cfg.train.batch_size,
            before=args.before, backend=jax.default_backend(), jax=jax.__version__,
            results=results), indent=2) + "\n")


if __name__ == "__main__":
    main()
