"""EfficientZero's Q normalisation (one min-max statistic per tree), as mctx qtransforms:
for pUCT (`qtransform_by_tree_min_max`) and for Gumbel search's completed Q-values
(`qtransform_completed_by_tree_min_max`, EfficientZero-V2)."""

import chex
import jax
import jax.numpy as jnp
import mctx


def _tree_min_max(tree: mctx.Tree) -> tuple[chex.Array, chex.Array]:
    """Min and max over every visited edge's Q(s, a) = r + discount * V(child) and every
    expanded node's value: the range EfficientZero's search statistics track."""
    all_q = tree.children_rewards + tree.children_discounts * tree.children_values  # [nodes, A]
    visited_edge = tree.children_visits > 0  # [nodes, A]
    expanded = tree.node_visits > 0  # [nodes]
    min_value = jnp.minimum(
        jnp.min(jnp.where(visited_edge, all_q, jnp.inf)),
        jnp.min(jnp.where(expanded, tree.node_values, jnp.inf)),
    )
    max_value = jnp.maximum(
        jnp.max(jnp.where(visited_edge, all_q, -jnp.inf)),
        jnp.max(jnp.where(expanded, tree.node_values, -jnp.inf)),
    )
    return min_value, max_value


def qtransform_by_tree_min_max(
    tree: mctx.Tree,
    node_index: chex.Numeric,
    *,
    delta: chex.Numeric = 0.01,
) -> chex.Array:
    """Returns Q-values normalised by the min and max of the whole tree.

    EfficientZero keeps one min-max statistic per search tree rather than per
    node (mctx's `qtransform_by_parent_and_siblings`), so a node whose children
    all look alike is not stretched to [0, 1]. The statistic covers every
    visited edge's `Q(s, a) = r + discount * V(child)` and every expanded
    node's value. Ranges narrower than `delta` are divided by `delta`, so that
    noise in a nearly flat tree is not amplified into strong preferences.

    Unvisited actions get the mean of the node's value and its visited
    children's Q-values (EfficientZero's "mean Q", which uses the edge into the
    node instead of the node's value and so mixes in the parent's reward). The
    completion lies inside the statistic's range, so all outputs are in [0, 1].

    Args:
      tree: _unbatched_ MCTS tree state.
      node_index: scalar index of the node whose actions are scored.
      delta: the smallest range used as the denominator.

    Returns:
      Completed, normalised Q-values. Shape `[num_actions]`.
    """
    chex.assert_shape(node_index, ())
    min_value, max_value = _tree_min_max(tree)
    qvalues = tree.qvalues(node_index)  # [A]
    visited = tree.children_visits[node_index] > 0  # [A]
    mean_q = (tree.node_values[node_index] + jnp.sum(jnp.where(visited, qvalues, 0.0))) / (
        jnp.sum(visited) + 1
    )
    completed = jnp.where(visited, qvalues, mean_q)  # [A]
    return (completed - min_value) / jnp.maximum(max_value - min_value, delta)


def qtransform_completed_by_tree_min_max(
    tree: mctx.Tree,
    node_index: chex.Numeric,
    *,
    delta: chex.Numeric = 0.01,
    value_scale: chex.Numeric = 0.1,
    maxvisit_init: chex.Numeric = 50.0,
) -> chex.Array:
    """Gumbel search's completed Q-values, normalised by the min and max of the whole tree.

    As mctx's `qtransform_completed_by_mix_value` (unvisited actions completed by the
    mixed value, then `(maxvisit_init + max visits) * value_scale * q`), except for the
    range the Q-values are normalised by: mctx stretches the node's own completed
    Q-values to [0, 1], so in an untrained model differences of noise size between
    three actions become the whole scale and the policy target turns near one-hot on a
    random action. EfficientZero-V2 normalises by the whole tree's range with a floor
    (its `value_minmax_delta`), so siblings that look alike stay alike.

    Args:
      tree: _unbatched_ MCTS tree state.
      node_index: scalar index of the node whose actions are scored.
      delta: the smallest range used as the denominator.
      value_scale: scale of the normalised Q-values (mctx's c_scale).
      maxvisit_init: offset added to the most visits of an action (mctx's c_visit).

    Returns:
      Scaled completed Q-values. Shape `[num_actions]`.
    """
    chex.assert_shape(node_index, ())
    qvalues = tree.qvalues(node_index)  # [A]
    visits = tree.children_visits[node_index]  # [A]
    visited = visits > 0
    # The mixed value (Gumbel MuZero, appendix D): the network's value averaged with the
    # prior-weighted Q of the visited actions.
    prior = jnp.maximum(jax.nn.softmax(tree.children_prior_logits[node_index]),
                        jnp.finfo(qvalues.dtype).tiny)
    visited_prior = jnp.where(visited, prior, 0.0)
    weighted_q = jnp.sum(visited_prior * jnp.where(visited, qvalues, 0.0)) / jnp.maximum(
        jnp.sum(visited_prior), jnp.finfo(qvalues.dtype).tiny)
    total = jnp.sum(visits)
    mixed = (tree.raw_values[node_index] + total * weighted_q) / (total + 1)
    completed = jnp.where(visited, qvalues, mixed)  # [A]
    min_value, max_value = _tree_min_max(tree)
    # The clip: the mixed value uses the raw value, which need not lie in the tree's range.
    normalised = jnp.clip((completed - min_value) / jnp.maximum(max_value - min_value, delta),
                          0.0, 1.0)
    return (maxvisit_init + jnp.max(visits)) * value_scale * normalised
