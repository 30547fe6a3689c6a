"""Can the model learn where the grid's reward is from as few arrivals as an RL run has?

    .venv/bin/python scripts/probe_reward.py [--arrivals 50] [--seeds 0 1 2] \
        [--arrival-fraction 0.25] [--cells] \
        [--model.max-flat-image 0 ...]   # any ModelConfig field, as `dreamzero train` takes it

Supervised, no RL. Every (board, move) of examples/grid_env.py (1,260 boards x 5 moves)
has a known reward: +1 for the move onto the goal, -0.02 otherwise. An 8k-step grid run's
replay holds about 50 arrivals, each a different (agent cell, goal cell, move), among
thousands of other moves. The probe trains the quickstart model's reward path (represent,
one dynamics step, reward head; the agent's loss, cross-entropy against two-hot targets of
h(reward)) on `--arrivals` random arrivals and 40 times as many other moves, in batches of
32 (AdamW 2e-3), and prints the mean predicted reward on the arrivals it did not train on
(and on those it trained on) and on the other moves from boards next to the goal. A model
that generalises across positions predicts near +1 for the held-out arrivals.
`--arrival-fraction` oversamples the arrivals, to tell a model that cannot generalise
from one that never leaves the plateau of predicting the mean of all moves.
"""

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_grid import boards, cells_after, grid_env, supervised_step  # noqa: E402

from agent import config as config_lib  # noqa: E402
from world_model import (  # noqa: E402
    ModelConfig,
    initial_inference,
    make_model,
    recurrent_inference,
    to_categorical,
)


@dataclasses.dataclass(frozen=True)
class Args:
    arrivals: int = 50
    """Arrivals trained on (the rest are held out)."""
    updates: int = 3000
    every: int = 500
    seeds: tuple[int, ...] = (0, 1, 2)
    arrival_fraction: float = 0.0
    """Share of each batch drawn from the arrivals trained on; 0 samples all training moves
    alike, as the replay does (one arrival in 41)."""
    cells: bool = False
    """Show the model one pixel a cell (6 x 6 x 3 frames) instead of 8 x 8."""
    model: ModelConfig = dataclasses.field(default_factory=lambda: config_lib.quickstart().model)


def moves_and_rewards():
    """Frames [1260, 48, 48, 3], per (board, move): arrives [1260, 5] bool, next to goal
    [1260] bool."""
    frames, agents, goals = boards()
    arrives = (cells_after(agents) == goals[:, None]).all(-1)  # [1260, 5]
    adjacent = np.abs(agents - goals).sum(1) == 1  # [1260]
    return frames, arrives, adjacent


def fit(args: Args, seed: int) -> list[tuple[float, float, float]]:
    frames, arrives, adjacent = moves_and_rewards()
    if args.cells:
        frames = frames[:, ::grid_env.CELL, ::grid_env.CELL]
    rewards = np.where(arrives, grid_env.GOAL_REWARD, grid_env.STEP_REWARD).astype(np.float32)
    rng = np.random.default_rng(seed)
    arrival_pairs = np.argwhere(arrives)  # [120, 2] (board, move)
    other_pairs = np.argwhere(~arrives)
    picked = rng.permutation(len(arrival_pairs))
    train_arrivals = arrival_pairs[picked[: args.arrivals]]
    held_arrivals = arrival_pairs[picked[args.arrivals:]]
    train_others = other_pairs[rng.choice(len(other_pairs), 40 * args.arrivals, replace=False)]
    train_pairs = np.concatenate([train_arrivals, train_others])
    held_others = np.argwhere(~arrives & adjacent[:, None])

    graphdef, params = make_model(args.model, frames.shape[1:], len(grid_env.MOVES), seed=seed)
    frames, rewards = jnp.asarray(frames), jnp.asarray(rewards)
    optimizer = optax.adamw(2e-3, weight_decay=0.0)
    opt_state = optimizer.init(params)
    cfg = args.model

    def predict(p, pairs):  # pairs [N, 2] -> (reward logits [N, R], reward [N])
        root = initial_inference(graphdef, p, frames[pairs[:, 0]])
        out = recurrent_inference(graphdef, p, root.state, pairs[:, 1])
        return out.reward_logits, out.reward

    def loss_fn(p, pairs):
        logits, _ = predict(p, pairs)
        target = to_categorical(rewards[pairs[:, 0], pairs[:, 1]], cfg.reward_support_size,
                                bin_width=cfg.reward_bin_width, smoothing=cfg.target_smoothing)
        return -jnp.sum(target * jax.nn.log_softmax(logits), axis=-1).mean()

    step = supervised_step(loss_fn, optimizer)

    @jax.jit
    def mean_rewards(p):  # on the arrivals trained on, the held-out ones, the other moves
        return tuple(predict(p, jnp.asarray(pairs))[1].mean()
                     for pairs in (train_arrivals, held_arrivals, held_others))

    results = []
    for update in range(args.updates + 1):
        if update % args.every == 0:
            results.append(tuple(float(x) for x in mean_rewards(params)))
        if update < args.updates:
            if args.arrival_fraction == 0:
                batch = train_pairs[rng.choice(len(train_pairs), 32)]
            else:
                num_arrivals = round(args.arrival_fraction * 32)
                batch = np.concatenate([
                    train_arrivals[rng.choice(len(train_arrivals), num_arrivals)],
                    train_others[rng.choice(len(train_others), 32 - num_arrivals)],
                ])
            params, opt_state = step(params, opt_state, jnp.asarray(batch))
    return results


def main() -> None:
    # Booleans as `dreamzero train` spells them: --model.value-prefix False.
    args = tyro.cli(Args, description=__doc__.split("\n\n")[0],
                    config=(tyro.conf.FlagConversionOff,))
    if not 0 <= args.arrival_fraction < 1:
        raise SystemExit("--arrival-fraction must be in [0, 1)")
    checkpoints = range(0, args.updates + 1, args.every)
    print("Mean predicted reward: arrivals trained on / held-out arrivals (both +1 in the env) "
          "/ the other moves next to the goal (-0.02)")
    print("| seed | " + " | ".join(f"{u} updates" for u in checkpoints) + " |")
    print("|--:|" + "--:|" * len(checkpoints))
    for seed in args.seeds:
        cells = [" / ".join(f"{x:.2f}" for x in r) for r in fit(args, seed)]
        print(f"| {seed} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
