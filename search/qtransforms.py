"""EfficientZero's Q normalisation, as an mctx qtransform."""

import chex
import jax.numpy as jnp
import mctx


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
    all_q = tree.children_rewards + tree.children_discounts * tree.children_values  # [N, A]
    visited_edge = tree.children_visits > 0  # [N, A]
    expanded = tree.node_visits > 0  # [N]
    min_value = jnp.minimum(
        jnp.min(jnp.where(visited_edge, all_q, jnp.inf)),
        jnp.min(jnp.where(expanded, tree.node_values, jnp.inf)),
    )
    max_value = jnp.maximum(
        jnp.max(jnp.where(visited_edge, all_q, -jnp.inf)),
        jnp.max(jnp.where(expanded, tree.node_values, -jnp.inf)),
    )

    qvalues = all_q[node_index]  # [A]
    visited = visited_edge[node_index]  # [A]
    mean_q = (tree.node_values[node_index] + jnp.sum(jnp.where(visited, qvalues, 0.0))) / (
        jnp.sum(visited) + 1
    )
    completed = jnp.where(visited, qvalues, mean_q)  # [A]
    return (completed - min_value) / jnp.maximum(max_value - min_value, delta)
