"""Counts the model FLOPs of a full training run of a preset, by phase.

    .venv/bin/python scripts/count_flops.py --preset atari100k [--num-simulations 16]
        [--tflops 100 400]

XLA's cost analysis counts the body of a loop once, whatever its trip count, and the
search and the loss unroll are loops; so this counts the model calls each phase makes,
one call at a time, and multiplies:

- acting, per acting step: `initial_inference` on the N env observations, then
  `num_simulations` x `recurrent_inference` at batch N;
- reanalysis, per update: `initial_inference` on B x (K + td + 1) observations (roots and
  bootstraps), then `num_simulations` x `recurrent_inference` at batch B x (K + 1);
- gradient step, per update: the consistency targets' `initial_inference` on B x K
  observations, plus the trained forward pass (`initial_inference` on B, K x
  `recurrent_inference` at batch B) counted three times for forward + backward (the usual
  rule of thumb; projections, heads' losses and the optimiser are left out).

The total sets a floor under a run's time: at a sustained `--tflops`, the run cannot be
faster than FLOPs / rate, whatever else is optimised. Lowering only, nothing is run.
"""

import argparse
import dataclasses

import jax
import jax.numpy as jnp

from agent import config as config_lib
from agent.envs import resolve_spec
from world_model import initial_inference, make_model, recurrent_inference


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=list(config_lib.PRESETS), default="atari100k")
    parser.add_argument("--env", help="env name (default: the preset's)")
    parser.add_argument("--num-simulations", type=int,
                        help="override the preset's search.num_simulations")
    parser.add_argument("--tflops", type=float, nargs="+", default=[50.0, 100.0, 200.0, 400.0],
                        help="sustained rates (TFLOP/s) to turn the total into time")
    return parser.parse_args()


def flops(fn, *args) -> float:
    return jax.jit(fn).lower(*args).cost_analysis()["flops"]


def main():
    args = parse_args()
    cfg = config_lib.preset(args.preset)
    if args.env:
        cfg = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, name=args.env))
    if args.num_simulations:
        cfg = dataclasses.replace(cfg, search=dataclasses.replace(
            cfg.search, num_simulations=args.num_simulations))
    spec = resolve_spec(cfg.env.name, **cfg.env.keywords())
    graphdef, params = make_model(cfg.model, spec.obs_shape, spec.num_actions, seed=0)
    t, sims = cfg.train, cfg.search.num_simulations
    k, td, b, n = t.unroll_steps, t.td_steps, t.batch_size, cfg.env.num_envs
    obs_dtype = jnp.uint8 if spec.is_image else jnp.float32

    def initial(batch: int) -> float:
        obs = jax.ShapeDtypeStruct((batch, *spec.obs_shape), obs_dtype)
        return flops(lambda p, o: initial_inference(graphdef, p, o), params, obs)

    def recurrent(batch: int) -> float:
        state = jax.eval_shape(lambda p, o: initial_inference(graphdef, p, o).state, params,
                               jax.ShapeDtypeStruct((batch, *spec.obs_shape), obs_dtype))
        action = jax.ShapeDtypeStruct((batch,), jnp.int32)
        return flops(lambda p, s, a: recurrent_inference(graphdef, p, s, a), params, state,
                     action)

    acting_steps = -(-t.env_steps // n)
    phases = [
        ("acting", initial(n) + sims * recurrent(n), acting_steps, "acting steps"),
        ("reanalysis", initial(b * (k + td + 1)) + sims * recurrent(b * (k + 1)),
         cfg.total_updates, "updates"),
        ("gradient step", initial(b * k) + 3 * (initial(b) + k * recurrent(b)),
         cfg.total_updates, "updates"),
    ]
    total = sum(each * count for _, each, count, _ in phases)
    print(f"preset {cfg.preset}, env {cfg.env.name}: obs {spec.obs_shape}, batch {b}, "
          f"K {k}, td {td}, {cfg.search.kind} x {sims}, {n} envs, "
          f"{t.env_steps:,} env steps, {cfg.total_updates:,} updates")
    print(f"one model call: initial_inference {initial(1) / 1e9:.3f} GFLOP, "
          f"recurrent_inference {recurrent(1) / 1e9:.4f} GFLOP (batch 1)\n")
    print("| phase | GFLOP each | per full run | PFLOP | share |")
    print("|---|--:|--:|--:|--:|")
    for name, each, count, unit in phases:
        print(f"| {name} | {each / 1e9:,.1f} | {count:,} {unit} | {each * count / 1e15:,.1f} "
              f"| {100 * each * count / total:.1f}% |")
    print(f"| **total** | | | **{total / 1e15:,.1f}** | 100% |\n")
    for rate in args.tflops:
        print(f"at {rate:,.0f} TFLOP/s sustained: {total / (rate * 1e12) / 60:,.1f} min")


if __name__ == "__main__":
    main()
