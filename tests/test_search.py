"""Tests for search/: golden searches on hand-built models, the min-max qtransform,
and the adapter to the learned world model."""

import chex
import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

import search

# A hand-built deterministic model: the embedding is a state index, params are tables.
# From the root (state 0), action 2 leads to state 1 and every action from state 1
# pays reward 1; actions 1 and 3 lead to the empty state 2 and action 0 costs -1.
# States 3 and 4 absorb with reward 0. Priors are uniform and all values are 0, so
# only search can find action 2.
_TRANSITIONS = jnp.array([[2, 2, 1, 2], [3, 3, 3, 3], [4, 4, 4, 4], [3, 3, 3, 3], [4, 4, 4, 4]])
_REWARDS = jnp.array([[-1.0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
_DISCOUNT = 0.9


def _table_recurrent_fn(params, rng, action, state):
    """`params` = dict(transitions [S, A], rewards [S, A], values [S], logits [S, A])."""
    del rng
    output = mctx.RecurrentFnOutput(
        reward=params["rewards"][state, action],
        discount=jnp.full(state.shape, _DISCOUNT),
        prior_logits=params["logits"][state],
        value=params["values"][state])
    return output, params["transitions"][state, action]


def _table_root(params, states):
    return mctx.RootFnOutput(
        prior_logits=params["logits"][states], value=params["values"][states], embedding=states)


def _golden_params():
    num_states, num_actions = _TRANSITIONS.shape
    return dict(transitions=_TRANSITIONS, rewards=_REWARDS, values=jnp.zeros(num_states),
                logits=jnp.zeros((num_states, num_actions)))


def _random_params(seed):
    num_states, num_actions = _TRANSITIONS.shape
    k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
    return dict(
        transitions=jax.random.randint(k1, (num_states, num_actions), 0, num_states),
        rewards=jax.random.normal(k2, (num_states, num_actions)),
        values=jax.random.normal(k3, (num_states,)),
        logits=jax.random.normal(k4, (num_states, num_actions)))


@jax.jit(static_argnames=("num_simulations", "kind", "qtransform"))
def _jit_plan(params, rng, states, invalid_actions, **kwargs):
    return search.plan(params, rng, _table_root(params, states), _table_recurrent_fn,
                       invalid_actions=invalid_actions, **kwargs)


def _plan_tables(params, rng, states, invalid_actions=None, *, kind, **kwargs):
    """`plan` on a table model from root states `[B]`. Every test uses the same shapes
    and simulation counts so that the few compilations are shared (mctx compiles in
    seconds on CPU, and runs slowly without jit)."""
    if invalid_actions is None:
        invalid_actions = jnp.zeros((states.shape[0], _TRANSITIONS.shape[1]))
    num_simulations = dict(gumbel=16, muzero=32).get(kind, 4)
    return _jit_plan(params, rng, states, invalid_actions, kind=kind,
                     num_simulations=num_simulations, **kwargs)


# Golden numbers recorded from a run of this code with mctx 0.0.71 on CPU, float32.
# Gumbel with gumbel_scale=0 does not depend on the rng; muzero depends on it only
# through mctx's 1e-7 tie-breaking noise, so the rng is fixed.
_GOLDEN = [
    (dict(kind="gumbel", gumbel_scale=0.0),
     [0.00312021, 0.07654662, 0.84378666, 0.07654662], 0.14705883),
    (dict(kind="muzero", temperature=0.0, dirichlet_fraction=0.0),
     [0.03125, 0.09375, 0.78125, 0.09375], 0.62424237),
    (dict(kind="muzero", temperature=0.0, dirichlet_fraction=0.0, qtransform="minmax"),
     [0.03125, 0.09375, 0.78125, 0.09375], 0.6242423),
]


@pytest.mark.parametrize(("kwargs", "weights", "root_value"), _GOLDEN)
def test_golden_search_finds_delayed_reward(kwargs, weights, root_value):
    states = jnp.zeros(8, jnp.int32)
    out = _plan_tables(_golden_params(), jax.random.key(0), states, **kwargs)
    chex.assert_shape([out.action, out.root_value, out.network_value], (8,))
    chex.assert_shape(out.action_weights, (8, 4))
    assert out.action.dtype == jnp.int32
    np.testing.assert_array_equal(out.action, np.full(8, 2))
    # Action 2 dominates the policy target and the search sees the reward.
    assert np.all(np.argmax(out.action_weights, axis=-1) == 2)
    assert np.all(out.root_value > 0)
    np.testing.assert_allclose(out.action_weights, [weights] * 8, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.root_value, [root_value] * 8, rtol=1e-5)
    np.testing.assert_array_equal(out.network_value, np.zeros(8))


def _tree(node_values, node_visits, children_visits, children_rewards, children_values,
          *, discount=0.9):
    """An unbatched mctx tree from the fields the qtransform reads; `[N]`, `[N, A]`."""
    node_values = jnp.asarray(node_values, jnp.float32)
    children_visits = jnp.asarray(children_visits, jnp.int32)
    n, a = children_visits.shape
    return mctx.Tree(
        node_visits=jnp.asarray(node_visits, jnp.int32),
        raw_values=node_values,
        node_values=node_values,
        parents=jnp.full(n, -1, jnp.int32),
        action_from_parent=jnp.full(n, -1, jnp.int32),
        children_index=jnp.where(children_visits > 0, 1, -1),
        children_prior_logits=jnp.zeros((n, a)),
        children_visits=children_visits,
        children_rewards=jnp.asarray(children_rewards, jnp.float32),
        children_discounts=jnp.full((n, a), discount),
        children_values=jnp.asarray(children_values, jnp.float32),
        embeddings=jnp.zeros(n),
        root_invalid_actions=jnp.zeros(a),
        extra_data=None)


def _all_nodes(qtransform, tree):
    return jax.vmap(qtransform, in_axes=(None, 0))(tree, jnp.arange(tree.node_values.shape[0]))


def test_minmax_qtransform_pinned():
    # Root 0 -a0-> node 1 -a0-> node 3, root 0 -a1-> node 2; discount 0.9.
    tree = _tree(
        node_values=[1.0, 2.0, -1.0, 0.0],
        node_visits=[4, 2, 1, 1],
        children_visits=[[2, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]],
        children_rewards=[[1.2, 0, 0], [0.5, 0, 0], [0, 0, 0], [0, 0, 0]],
        children_values=[[2.0, -1.0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]])
    # Visited Q: 1.2 + 0.9 * 2 = 3, 0.9 * -1 = -0.9, 0.5; with the node values the
    # tree spans [-1, 3]. Unvisited actions take the mean of the node value and the
    # visited Q: root (1 + 3 - 0.9) / 3, node 1 (2 + 0.5) / 2, leaves their value.
    expected = (np.array([[3.0, -0.9, 3.1 / 3], [0.5, 1.25, 1.25], [-1, -1, -1], [0, 0, 0]])
                + 1) / 4
    np.testing.assert_allclose(
        _all_nodes(search.qtransform_by_tree_min_max, tree), expected, rtol=1e-6)


def test_minmax_qtransform_range_floor():
    # The tree spans [0.002, 0.004]: narrower than delta, so divided by 0.01.
    tree = _tree(
        node_values=[0.002, 0.004],
        node_visits=[2, 1],
        children_visits=[[1, 0], [0, 0]],
        children_rewards=[[0.0, 0.0], [0.0, 0.0]],
        children_values=[[0.004, 0.0], [0.0, 0.0]],
        discount=1.0)
    np.testing.assert_allclose(
        search.qtransform_by_tree_min_max(tree, jnp.int32(0)), [0.2, 0.1], rtol=1e-5)
    np.testing.assert_allclose(
        search.qtransform_by_tree_min_max(tree, jnp.int32(0), delta=0.001), [1.0, 0.5],
        rtol=1e-5)
    # A tree of one node has no range at all: everything maps to 0, not NaN.
    single = _tree([0.5], [1], [[0, 0]], [[0.0, 0.0]], [[0.0, 0.0]])
    np.testing.assert_array_equal(search.qtransform_by_tree_min_max(single, jnp.int32(0)), [0, 0])


def test_minmax_qtransform_in_unit_interval():
    @jax.jit
    def search_and_score(params, rng):
        root = _table_root(params, jnp.arange(8) % _TRANSITIONS.shape[0])
        tree = mctx.muzero_policy(params, rng, root, _table_recurrent_fn, num_simulations=32,
                                  qtransform=search.qtransform_by_tree_min_max).search_tree
        return tree, jax.vmap(_all_nodes, in_axes=(None, 0))(
            search.qtransform_by_tree_min_max, tree)  # [B, N, A]

    tree, scores = search_and_score(_random_params(1), jax.random.key(0))
    expanded = np.asarray(tree.node_visits > 0)
    assert expanded.sum() > 8 * 20
    assert np.all(np.isfinite(scores))
    assert np.all((scores[expanded] >= 0) & (scores[expanded] <= 1 + 1e-6))


@pytest.mark.parametrize("kind", ["gumbel", "muzero"])
def test_invalid_actions_never_chosen(kind):
    # Row 0 forbids the rewarding action 2; row 1 allows only actions 1 and 3.
    invalid = jnp.array([[0, 0, 1, 0], [1, 0, 1, 0]] * 4, jnp.float32)  # [8, 4]
    states = jnp.zeros(8, jnp.int32)
    for seed in range(3):
        out = _plan_tables(_golden_params(), jax.random.key(seed), states, invalid, kind=kind)
        chosen = np.asarray(invalid)[np.arange(8), np.asarray(out.action)]
        assert not chosen.any()
        assert np.all(np.asarray(out.action_weights)[np.asarray(invalid) == 1] == 0)
        np.testing.assert_allclose(out.action_weights.sum(-1), 1, rtol=1e-5)


def test_muzero_temperature_zero_is_argmax_of_visits():
    params = _random_params(2)
    states = jnp.arange(8) % _TRANSITIONS.shape[0]
    for seed in range(4):
        out = _plan_tables(params, jax.random.key(seed), states, kind="muzero",
                           temperature=0.0)
        # Ties go to the first action, as in argmax.
        np.testing.assert_array_equal(out.action, np.argmax(out.action_weights, axis=-1))
    # At temperature 1 the action is sampled from the visits instead.
    actions = [_plan_tables(params, jax.random.key(seed), states, kind="muzero",
                            temperature=1.0).action for seed in range(4)]
    assert len({tuple(np.asarray(a)) for a in actions}) > 1


def test_dirichlet_noise_only_when_fraction_positive():
    # Zero rewards, zero values and uniform priors: without noise pUCT spreads the
    # simulations evenly over the actions whatever the rng; noise tilts the root prior.
    num_states, num_actions = _TRANSITIONS.shape
    params = dict(transitions=jnp.zeros((num_states, num_actions), jnp.int32),
                  rewards=jnp.zeros((num_states, num_actions)), values=jnp.zeros(num_states),
                  logits=jnp.zeros((num_states, num_actions)))
    states = jnp.zeros(8, jnp.int32)
    for seed in range(3):
        clean = _plan_tables(params, jax.random.key(seed), states, kind="muzero",
                             dirichlet_fraction=0.0)
        np.testing.assert_array_equal(clean.action_weights, np.full((8, 4), 0.25))
        noisy = _plan_tables(params, jax.random.key(seed), states, kind="muzero",
                             dirichlet_fraction=0.25)
        assert np.any(np.asarray(noisy.action_weights) != 0.25)


def test_bad_options_raise():
    states = jnp.zeros(1, jnp.int32)
    with pytest.raises(ValueError, match="qtransform"):
        _plan_tables(_golden_params(), jax.random.key(0), states, kind="gumbel",
                     qtransform="minmax")
    with pytest.raises(ValueError, match="kind"):
        _plan_tables(_golden_params(), jax.random.key(0), states, kind="alphazero")
