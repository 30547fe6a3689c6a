"""Batched tree search over the learned model, on top of mctx."""

import dataclasses
import functools
from typing import Any, Literal

import chex
import jax
import jax.numpy as jnp
import mctx

import world_model
from search import qtransforms

# (kind, qtransform) -> the mctx qtransform and the name of its range-floor argument.
_QTRANSFORMS = {
    ("gumbel", "default"): (mctx.qtransform_completed_by_mix_value, "epsilon"),
    ("gumbel", "minmax"): (qtransforms.qtransform_completed_by_tree_min_max, "delta"),
    ("muzero", "default"): (mctx.qtransform_by_parent_and_siblings, "epsilon"),
    ("muzero", "minmax"): (qtransforms.qtransform_by_tree_min_max, "delta"),
}


@chex.dataclass(frozen=True)
class PlanOutput:
    """The result of one batched search.

    action: `[B]` int32 the action to take.
    action_weights: `[B, num_actions]` the improved policy (Gumbel) or the root
      visit distribution (MuZero); the policy target. Invalid actions get zero.
    root_value: `[B]` the search value at the root.
    network_value: `[B]` the network's raw value at the root.
    """

    action: chex.Array
    action_weights: chex.Array
    root_value: chex.Array
    network_value: chex.Array


def model_root(graphdef: Any, params: Any, obs: chex.Array) -> mctx.RootFnOutput:
    """Returns the search root for a batch of observations `[B, *obs_shape]`.

    The embedding is the model's whole `ModelState` (latent, LSTM state, value
    prefix, step counter), so each tree node carries what the next
    `recurrent_inference` needs.
    """
    return root_from_output(world_model.initial_inference(graphdef, params, obs))


def root_from_output(out: world_model.ModelOutput) -> mctx.RootFnOutput:
    """The search root of an `initial_inference` output already at hand (leaves `[B, ...]`)."""
    return mctx.RootFnOutput(prior_logits=out.policy_logits, value=out.value, embedding=out.state)


@dataclasses.dataclass(frozen=True)
class _ModelRecurrentFn:
    """`recurrent_fn` for mctx; a value-comparable dataclass rather than a
    closure so that two calls of `model_recurrent_fn` hash equal and a jitted
    `plan` taking it as a static argument is not retraced."""

    graphdef: Any
    discount: float

    def __call__(self, params, rng, action, state):
        del rng  # The model is deterministic.
        out = world_model.recurrent_inference(self.graphdef, params, state, action)
        # EfficientZero does not model terminals: the discount is the same everywhere.
        step = mctx.RecurrentFnOutput(
            reward=out.reward,
            discount=jnp.full_like(out.value, self.discount),
            prior_logits=out.policy_logits,
            value=out.value,
        )
        return step, out.state


def model_recurrent_fn(graphdef: Any, *, discount: float) -> mctx.RecurrentFn:
    """Returns `recurrent_fn(params, rng, action, state) -> (output, next_state)`.

    The reward is `world_model.recurrent_inference`'s, i.e. the difference of
    consecutive value prefixes with the LSTM reset every `lstm_horizon` steps;
    the reset is driven by `state.steps`, which mctx stores and gathers per node
    like the rest of the embedding, so it is right at any depth of the tree.
    """
    return _ModelRecurrentFn(graphdef=graphdef, discount=float(discount))


def plan(
    params: Any,
    rng: chex.PRNGKey,
    root: mctx.RootFnOutput,
    recurrent_fn: mctx.RecurrentFn,
    *,
    num_simulations: int,
    kind: Literal["gumbel", "muzero"] = "gumbel",
    invalid_actions: chex.Array | None = None,
    temperature: chex.Numeric = 1.0,
    gumbel_scale: chex.Numeric = 1.0,
    dirichlet_alpha: float = 0.3,
    dirichlet_fraction: float = 0.25,
    pb_c_init: float = 1.25,
    pb_c_base: float = 19652.0,
    max_num_considered_actions: int = 16,
    qtransform: Literal["default", "minmax"] = "default",
    min_q_range: float = 0.01,
    max_depth: int | None = None,
) -> PlanOutput:
    """Searches from a batch of roots and returns actions and policy targets.

    Pure and jit-friendly: `recurrent_fn`, `num_simulations`, `kind`,
    `qtransform`, `max_num_considered_actions` and `max_depth` must be static;
    the float knobs may be Python floats or traced arrays.

    Args:
      params: the model parameters, forwarded to `recurrent_fn`.
      rng: random key, consumed.
      root: `RootFnOutput` with prior_logits `[B, A]`, value `[B]` and an
        embedding pytree with leaves `[B, ...]`.
      recurrent_fn: the model, see `model_recurrent_fn`.
      num_simulations: number of simulations per root.
      kind: "gumbel" for Gumbel MuZero (sequential halving at the root;
        greedy with `gumbel_scale=0`), "muzero" for pUCT with Dirichlet noise.
      invalid_actions: `[B, A]` mask, one where an action is invalid.
      temperature: muzero only; act with probabilities `visits ** (1 / temperature)`;
        0 takes the most visited action (the first on ties). Unvisited actions,
        invalid ones included, are never taken.
      gumbel_scale: gumbel only; scale of the root Gumbel noise.
      dirichlet_alpha: muzero only; concentration of the root noise.
      dirichlet_fraction: muzero only; weight of the root noise, 0 for none.
      pb_c_init: muzero only; pUCT c1.
      pb_c_base: muzero only; pUCT c2.
      max_num_considered_actions: gumbel only; actions sampled at the root.
      qtransform: the range Q-values are normalised by: "default" the node's own
        (mctx: parent and siblings for pUCT, the completed Q-values for Gumbel),
        "minmax" the whole tree's (EfficientZero; EfficientZero-V2 for Gumbel).
      min_q_range: the smallest range Q-values are divided by, in return units
        (EfficientZero's 0.01), so that noise in a nearly flat tree is not
        stretched into strong preferences.
      max_depth: maximum depth of a simulation; None for `num_simulations`.

    Returns:
      A `PlanOutput`.
    """
    if kind not in ("gumbel", "muzero"):
        raise ValueError(f"kind={kind!r}; expected 'gumbel' or 'muzero'")
    if qtransform not in ("default", "minmax"):
        raise ValueError(f"qtransform={qtransform!r}; expected 'default' or 'minmax'")
    transform, floor_name = _QTRANSFORMS[kind, qtransform]
    transform = functools.partial(transform, **{floor_name: min_q_range})
    if kind == "gumbel":
        out = mctx.gumbel_muzero_policy(
            params,
            rng,
            root,
            recurrent_fn,
            num_simulations=num_simulations,
            invalid_actions=invalid_actions,
            max_depth=max_depth,
            max_num_considered_actions=max_num_considered_actions,
            gumbel_scale=gumbel_scale,
            qtransform=transform,
        )
        action = out.action  # [B]
    else:
        rng, act_rng = jax.random.split(rng)
        out = mctx.muzero_policy(
            params,
            rng,
            root,
            recurrent_fn,
            num_simulations=num_simulations,
            invalid_actions=invalid_actions,
            max_depth=max_depth,
            qtransform=transform,
            dirichlet_fraction=dirichlet_fraction,
            dirichlet_alpha=dirichlet_alpha,
            pb_c_init=pb_c_init,
            pb_c_base=pb_c_base,
        )
        summary = out.search_tree.summary()
        action = _act_on_visits(act_rng, summary.visit_counts, summary.qvalues, temperature)
    return PlanOutput(
        action=action,
        action_weights=out.action_weights,
        root_value=out.search_tree.summary().value,
        network_value=root.value,
    )


def _act_on_visits(rng, visit_counts, qvalues, temperature):
    """Samples actions `[B]` with probabilities `visits ** (1 / temperature)`.

    Used instead of mctx's sampler, which gives unvisited (so also invalid) actions
    a tiny but non-zero probability that grows with the temperature, and which at
    temperature 0 breaks ties at random. Here temperature 0 takes, among the most
    visited actions, the one with the highest Q: with few simulations visit ties are
    common, and a fixed tie-break (the first action) can stand still for ever.
    """
    log_visits = jnp.log(visit_counts)  # [B, A]; -inf where unvisited
    # The max subtraction keeps the division by a tiny temperature finite at the max.
    logits = (log_visits - jnp.max(log_visits, axis=-1, keepdims=True)) / jnp.maximum(
        temperature, jnp.finfo(log_visits.dtype).tiny
    )
    sampled = jax.random.categorical(rng, logits).astype(jnp.int32)
    most_visited = visit_counts == jnp.max(visit_counts, axis=-1, keepdims=True)  # [B, A]
    greedy = jnp.argmax(jnp.where(most_visited, qvalues, -jnp.inf), axis=-1).astype(jnp.int32)
    return jnp.where(jnp.asarray(temperature) == 0, greedy, sampled)
