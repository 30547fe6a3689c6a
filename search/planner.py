"""Batched tree search over the learned model, on top of mctx.

Discrete actions are mctx's actions. A Box action space is searched by sampling
(Sampled MuZero, Hubert et al. 2021; EfficientZero-V2): each node draws S actions
from its policy, those S *arms* are mctx's actions, and the node keeps them in its
embedding (`SampledEmbedding`) so that `recurrent_fn` maps an arm to its action.
"""

import dataclasses
import functools
from typing import Any, Literal

import chex
import jax
import jax.numpy as jnp
import mctx

import world_model
from search import qtransforms
from world_model import gaussian

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

    action: `[B]` int32 the action to take; Box actions `[B, D]` in [-1, 1].
    action_weights: `[B, num_actions]` the improved policy (Gumbel) or the root
      visit distribution (MuZero); the policy target. Invalid actions get zero.
      Box actions: `[B, S]`, over the root's arms.
    root_value: `[B]` the search value at the root.
    greedy_value: `[B]` the Q-value of the action a greedy search takes (the most
      visited, ties to the higher Q): the value of acting on the search, where
      root_value also averages in the actions it explored.
    network_value: `[B]` the network's raw value at the root.
    arms: Box actions only: `[B, S, D]` the root's arms (pre-tanh); else None.
    """

    action: chex.Array
    action_weights: chex.Array
    root_value: chex.Array
    greedy_value: chex.Array
    network_value: chex.Array
    arms: chex.Array | None = None


@chex.dataclass(frozen=True)
class SampledEmbedding:
    """A node of a search over Box actions: the model state there and its arms."""

    state: world_model.ModelState
    arms: chex.Array  # [B, S, D] pre-tanh actions; arm i is mctx's action i


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


def sampled_root(rng: chex.PRNGKey, out: world_model.ModelOutput, *, num_arms: int,
                 wide_arms: int = 0, wide_scale: float = 2.0) -> mctx.RootFnOutput:
    """The search root over Box actions of an `initial_inference` output.

    `num_arms - wide_arms` arms come from the policy, `wide_arms` from it with the std
    times `wide_scale` (exploration beyond the policy, as EfficientZero-V2's root). The
    prior over the arms is Sampled MuZero's: policy / proposal at each arm, so arms drawn
    from the policy itself start equal, and a wide arm the policy finds unlikely starts
    lower.
    """
    narrow_rng, wide_rng = jax.random.split(rng)
    params = out.policy_logits  # [B, 2D]
    arms = gaussian.sample(narrow_rng, params, num_arms - wide_arms)  # [B, S - wide_arms, D]
    if wide_arms:
        wide = gaussian.sample(wide_rng, params, wide_arms, std_scale=wide_scale)
        arms = jnp.concatenate([arms, wide], axis=1)  # [B, S, D]
        log_policy = gaussian.log_prob(params, arms)  # [B, S]
        share = wide_arms / num_arms
        log_proposal = jnp.logaddexp(
            jnp.log1p(-share) + log_policy,
            jnp.log(share) + gaussian.log_prob(params, arms, std_scale=wide_scale))
        prior_logits = log_policy - log_proposal
    else:
        prior_logits = jnp.zeros(arms.shape[:2], jnp.float32)
    return mctx.RootFnOutput(prior_logits=prior_logits, value=out.value,
                             embedding=SampledEmbedding(state=out.state, arms=arms))


@dataclasses.dataclass(frozen=True)
class _ModelRecurrentFn:
    """`recurrent_fn` for mctx; a value-comparable dataclass rather than a
    closure so that two calls of `model_recurrent_fn` hash equal and a jitted
    `plan` taking it as a static argument is not retraced."""

    graphdef: Any
    discount: float
    num_arms: int

    def __call__(self, params, rng, action, embedding):
        if self.num_arms:
            state = embedding.state
            action = jnp.take_along_axis(embedding.arms, action[:, None, None], axis=1)[:, 0]
            action = gaussian.squash(action)  # [B, D]
        else:
            state = embedding  # The model is deterministic: rng serves only the sampling.
        out = world_model.recurrent_inference(self.graphdef, params, state, action)
        prior_logits, next_embedding = out.policy_logits, out.state
        if self.num_arms:
            # Arms drawn from the node's own policy: the prior over them is uniform.
            arms = gaussian.sample(rng, out.policy_logits, self.num_arms)  # [B, S, D]
            prior_logits = jnp.zeros(arms.shape[:2], jnp.float32)
            next_embedding = SampledEmbedding(state=out.state, arms=arms)
        # EfficientZero does not model terminals: the discount is the same everywhere.
        step = mctx.RecurrentFnOutput(
            reward=out.reward,
            discount=jnp.full_like(out.value, self.discount),
            prior_logits=prior_logits,
            value=out.value,
        )
        return step, next_embedding


def model_recurrent_fn(graphdef: Any, *, discount: float, num_arms: int = 0) -> mctx.RecurrentFn:
    """Returns `recurrent_fn(params, rng, action, embedding) -> (output, next_embedding)`.

    The reward is `world_model.recurrent_inference`'s, i.e. the difference of
    consecutive value prefixes with the LSTM reset every `lstm_horizon` steps;
    the reset is driven by `state.steps`, which mctx stores and gathers per node
    like the rest of the embedding, so it is right at any depth of the tree.
    `num_arms` > 0 searches a Box action space (embeddings are `SampledEmbedding`s
    with that many arms, see `sampled_root`).
    """
    return _ModelRecurrentFn(graphdef=graphdef, discount=float(discount), num_arms=num_arms)


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
        embedding pytree with leaves `[B, ...]`; from `sampled_root` for Box actions.
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
    if kind == "gumbel":
        action = out.action  # [B]
    else:
        action = _act_on_visits(act_rng, summary.visit_counts, summary.qvalues, temperature)
    arms = None
    if isinstance(root.embedding, SampledEmbedding):
        arms = root.embedding.arms  # [B, S, D]
        action = gaussian.squash(jnp.take_along_axis(arms, action[:, None, None], axis=1)[:, 0])
    greedy = _greedy_action(summary.visit_counts, summary.qvalues)  # [B]
    return PlanOutput(
        action=action,
        action_weights=out.action_weights,
        root_value=summary.value,
        greedy_value=jnp.take_along_axis(summary.qvalues, greedy[:, None], axis=-1)[:, 0],
        network_value=root.value,
        arms=arms,
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
    greedy = _greedy_action(visit_counts, qvalues)
    return jnp.where(jnp.asarray(temperature) == 0, greedy, sampled)


def _greedy_action(visit_counts, qvalues):
    """`[B]` int32: the most visited action, ties to the highest Q."""
    most_visited = visit_counts == jnp.max(visit_counts, axis=-1, keepdims=True)  # [B, A]
    return jnp.argmax(jnp.where(most_visited, qvalues, -jnp.inf), axis=-1).astype(jnp.int32)
