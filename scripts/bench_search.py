"""Benchmarks `search.plan` against bare `world_model.recurrent_inference` calls.

    .venv/bin/python scripts/bench_search.py --sizes smoke atari100k \
        --batches 1 8 64 --repeats 5

Prints a Markdown table: milliseconds per jitted `plan` call (the root is computed
beforehand and not timed), simulations/s (simulations x batch / time), roots/s, one bare
`recurrent_inference` call and 16 of them chained in one jitted `lax.scan` at the same
batch, and `overhead` = plan / (num_simulations / 16 x scan). A search makes exactly one
model call per simulation, so the overhead is what the tree costs on top of the model.
The headline is the overhead of Gumbel, 16 simulations, batch 8 at atari100k size
(target <= 1.5x). Timings are medians after a compiling call, the calls of one size and
batch taking turns so that their ratios survive changes in the machine's load.
"""

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import search
import world_model

# name -> (ModelConfig overrides, obs_shape, num_actions).
SIZES = {
    # Tiny: a 16-channel network on 10x10 images with 4 stacked grey frames.
    "smoke": (
        dict(
            channels=16,
            num_blocks=1,
            downsample=False,
            head_channels=8,
            head_hidden=32,
            lstm_hidden=64,
            support_size=20,
            reward_support_size=5,
            proj_hidden=128,
            proj_out=128,
            pred_hidden=64,
        ),
        (10, 10, 4),
        3,
    ),
    # EfficientZero's Atari network (ModelConfig defaults), 4 stacked RGB frames, pong's
    # 6 actions.
    "atari100k": ({}, (96, 96, 12), 6),
}
# kind -> plan keywords; muzero as EfficientZero runs it (50 simulations, tree min-max).
KINDS = {
    "gumbel": dict(kind="gumbel", num_simulations=16),
    "muzero": dict(kind="muzero", num_simulations=50, qtransform="minmax"),
}
DISCOUNT = 0.997**4
SCAN_STEPS = 16


def _median_seconds(calls, *, repeats):
    """Median wall time of each jitted call in `calls` (name -> (fn, args)).

    Each is called once to compile, then the calls take turns, so that a change in the
    machine's load during the run affects all of them alike and their ratios hold.
    """
    for fn, args in calls.values():
        jax.block_until_ready(fn(*args))
    traces = {name: fn._cache_size() for name, (fn, _) in calls.items()}
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, (fn, args) in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - start)
    # A retrace would time compilation rather than the search.
    for name, (fn, _) in calls.items():
        if fn._cache_size() != traces[name]:
            raise RuntimeError(f"{name} was retraced while being timed")
    return {name: statistics.median(t) for name, t in times.items()}


def bench_size(name, *, batches, repeats):
    """Yields one table row (a dict) per kind and batch size."""
    overrides, obs_shape, num_actions = SIZES[name]
    graphdef, params = world_model.make_model(
        world_model.ModelConfig(**overrides), obs_shape, num_actions, seed=0
    )
    recurrent_fn = search.model_recurrent_fn(graphdef, discount=DISCOUNT)
    rng = np.random.default_rng(0)

    def chain(params, state, actions):
        # Returns what a search consumes, so that no part of the model is dead code.
        def step(state, action):
            out = world_model.recurrent_inference(graphdef, params, state, action)
            return out.state, (out.reward, out.value, out.policy_logits)

        return jax.lax.scan(step, state, actions)

    for batch in batches:
        obs = rng.integers(0, 256, (batch, *obs_shape), dtype=np.uint8)
        root = jax.jit(search.model_root, static_argnums=0)(graphdef, params, obs)
        one_step = jax.jit(functools.partial(world_model.recurrent_inference, graphdef))
        # Actions are arguments, as in a search, so that XLA cannot fold them in.
        actions = jnp.asarray(rng.integers(0, num_actions, (SCAN_STEPS, batch)), jnp.int32)
        calls = dict(
            step=(one_step, (params, root.embedding, actions[0])),
            scan=(jax.jit(chain), (params, root.embedding, actions)),
        )
        for kind, knobs in KINDS.items():
            plan = jax.jit(functools.partial(search.plan, recurrent_fn=recurrent_fn, **knobs))
            calls[kind] = (plan, (params, jax.random.key(0), root))
        seconds = _median_seconds(calls, repeats=repeats)
        for kind, knobs in KINDS.items():
            sims, plan_s, scan_s = knobs["num_simulations"], seconds[kind], seconds["scan"]
            yield dict(
                size=name,
                kind=kind,
                sims=sims,
                batch=batch,
                plan_ms=1e3 * plan_s,
                sims_per_s=sims * batch / plan_s,
                roots_per_s=batch / plan_s,
                step_ms=1e3 * seconds["step"],
                scan_ms=1e3 * scan_s,
                overhead=plan_s / (scan_s * sims / SCAN_STEPS),
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument(
        "--batches", nargs="+", type=int, default=None, help="default: 1 8 64, plus 256 off CPU"
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    batches = args.batches or [1, 8, 64] + ([256] if jax.default_backend() != "cpu" else [])

    print(f"jax {jax.__version__}, backend {jax.default_backend()}: {jax.devices()[0]}")
    print(f"median of {args.repeats} calls after compilation; root not timed\n")
    print(
        "| size | kind | sims | batch | ms / plan | sims/s | roots/s "
        f"| ms / recurrent_inference | ms / scan of {SCAN_STEPS} | overhead |"
    )
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    headline = None
    for size in args.sizes:
        for row in bench_size(size, batches=batches, repeats=args.repeats):
            print(
                "| {size} | {kind} | {sims} | {batch} | {plan_ms:.1f} | {sims_per_s:,.0f} "
                "| {roots_per_s:,.1f} | {step_ms:.2f} | {scan_ms:.1f} | {overhead:.2f}x |".format(
                    **row
                ),
                flush=True,
            )
            if (size, row["kind"], row["batch"]) == ("atari100k", "gumbel", 8):
                headline = row["overhead"]
    if headline is not None:
        verdict = "ok" if headline <= 1.5 else ("above target" if headline <= 2 else "DEFECT")
        print(
            f"\n** plan(gumbel, 16 sims, batch 8, atari100k) / scan of 16 "
            f"recurrent_inference = {headline:.2f}x ({verdict}; target <= 1.5x) **"
        )


if __name__ == "__main__":
    main()
