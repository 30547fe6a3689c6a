"""Tests for search/: golden searches on hand-built models, the min-max qtransform,
and the adapter to the learned world model."""

import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

import search
import world_model

# A hand-built deterministic model: the embedding is a state index, params are tables.
# From the root (state 0), action 2 leads to state 1 and every action from state 1
# pays reward 1; actions 1 and 3 lead to the empty state 2 and action 0 costs -1.
# States 3 and 4 absorb with reward 0. Priors are uniform and all values are 0, so
# only search can find action 2.
_TRANSITIONS = jnp.array([[2, 2, 1, 2], [3, 3, 3, 3], [4, 4, 4, 4], [3, 3, 3, 3], [4, 4, 4, 4]])
_REWARDS = jnp.array([[-1.0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
_DISCOUNT = 0.9


def _table_recurrent_fn(params, rng, action, state):
    """`params` = dict(transitions [states, A], rewards [states, A], values [states],
    logits [states, A])."""
    del rng
    output = mctx.RecurrentFnOutput(
        reward=params["rewards"][state, action],
        discount=jnp.full(state.shape, _DISCOUNT),
        prior_logits=params["logits"][state],
        value=params["values"][state],
    )
    return output, params["transitions"][state, action]


def _table_root(params, states):
    return mctx.RootFnOutput(
        prior_logits=params["logits"][states], value=params["values"][states], embedding=states
    )


def _golden_params():
    num_states, num_actions = _TRANSITIONS.shape
    return dict(
        transitions=_TRANSITIONS,
        rewards=_REWARDS,
        values=jnp.zeros(num_states),
        logits=jnp.zeros((num_states, num_actions)),
    )


def _random_params(seed):
    num_states, num_actions = _TRANSITIONS.shape
    rng = np.random.default_rng(seed)
    return dict(
        transitions=jnp.asarray(rng.integers(0, num_states, (num_states, num_actions)), jnp.int32),
        rewards=jnp.asarray(rng.normal(size=(num_states, num_actions)), jnp.float32),
        values=jnp.asarray(rng.normal(size=num_states), jnp.float32),
        logits=jnp.asarray(rng.normal(size=(num_states, num_actions)), jnp.float32),
    )


def _key(seed):
    # RBG keys: mctx splits keys at every step, and threefry compiles much slower on CPU.
    return jax.random.key(seed, impl="rbg")


@jax.jit(static_argnames=("num_simulations", "kind", "qtransform"))
def _jit_plan(
    params, rng, states, invalid_actions, temperature, gumbel_scale, dirichlet_fraction, **static
):
    return search.plan(
        params,
        rng,
        _table_root(params, states),
        _table_recurrent_fn,
        invalid_actions=invalid_actions,
        temperature=temperature,
        gumbel_scale=gumbel_scale,
        dirichlet_fraction=dirichlet_fraction,
        **static,
    )


def _plan_tables(
    params,
    rng,
    states,
    invalid_actions=None,
    *,
    kind,
    qtransform="default",
    temperature=1.0,
    gumbel_scale=1.0,
    dirichlet_fraction=0.25,
):
    """`plan` on a table model from root states `[B]`. The tests share shapes, simulation
    counts and traced knobs so that they share the few compilations (mctx takes seconds
    to compile on CPU, and is slow without jit)."""
    if invalid_actions is None:
        invalid_actions = jnp.zeros((states.shape[0], _TRANSITIONS.shape[1]))
    return _jit_plan(
        params,
        rng,
        states,
        invalid_actions,
        temperature,
        gumbel_scale,
        dirichlet_fraction,
        kind=kind,
        qtransform=qtransform,
        num_simulations=32 if kind == "muzero" else 16,
    )


# Golden numbers recorded from a run of this code (mctx 0.0.71, CPU, float32, a batch of
# 8 identical roots, `_key(0)`). Gumbel with gumbel_scale=0 does not depend on the rng.
# MuZero depends on it only through mctx's 1e-7 tie-breaking noise, which with the
# default qtransform decides how the visits split between the tied actions 1 and 3
# (an unvisited action scores as the worst one); EfficientZero's min-max with mean-Q
# completion does not care. MuZero weights are visit counts / 32.
_MUZERO_VISITS = np.array(
    [
        [1, 11, 17, 3],
        [1, 6, 19, 6],
        [1, 3, 25, 3],
        [1, 11, 17, 3],
        [1, 3, 25, 3],
        [1, 3, 25, 3],
        [1, 11, 17, 3],
        [1, 3, 25, 3],
    ]
)
# The greedy value is Q(root, 2), the most visited action: 0.9 v(state 1), where state
# 1's value averages its network value 0 and the reward 1 of each later visit: 0.9 (n - 1)
# / n after n visits to action 2 (6 for Gumbel here; MuZero's from its visit counts).
_GOLDEN = [
    (
        dict(kind="gumbel", gumbel_scale=0.0),
        [0.003120208, 0.076546617, 0.843786657, 0.076546617],
        [0.14705883] * 8,
        [0.9 * 5 / 6] * 8,
    ),
    (
        dict(kind="muzero", temperature=0.0, dirichlet_fraction=0.0),
        _MUZERO_VISITS / 32,
        [
            0.40606064,
            0.460606,
            0.62424237,
            0.40606064,
            0.62424237,
            0.62424237,
            0.40606064,
            0.62424237,
        ],
        0.9 * (_MUZERO_VISITS[:, 2] - 1) / _MUZERO_VISITS[:, 2],
    ),
    (
        dict(kind="muzero", temperature=0.0, dirichlet_fraction=0.0, qtransform="minmax"),
        [0.03125, 0.09375, 0.78125, 0.09375],
        [0.62424231] * 8,
        [0.9 * 24 / 25] * 8,
    ),
]


@pytest.mark.parametrize(("kwargs", "weights", "root_value", "greedy_value"), _GOLDEN)
def test_golden_search_finds_delayed_reward(kwargs, weights, root_value, greedy_value):
    states = jnp.zeros(8, jnp.int32)
    out = _plan_tables(_golden_params(), _key(0), states, **kwargs)
    chex.assert_shape([out.action, out.root_value, out.greedy_value, out.network_value], (8,))
    chex.assert_shape(out.action_weights, (8, 4))
    assert out.action.dtype == jnp.int32
    np.testing.assert_array_equal(out.action, np.full(8, 2))
    # Action 2 dominates the policy target and the search sees the reward.
    assert np.all(np.argmax(out.action_weights, axis=-1) == 2)
    assert np.all(out.root_value > 0)
    np.testing.assert_allclose(
        out.action_weights, np.broadcast_to(weights, (8, 4)), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(out.root_value, root_value, rtol=1e-5)
    np.testing.assert_allclose(out.greedy_value, greedy_value, rtol=1e-5)
    np.testing.assert_array_equal(out.network_value, np.zeros(8))
    if kwargs["kind"] == "gumbel":  # Without Gumbel noise the search is deterministic.
        again = _plan_tables(_golden_params(), _key(1), states, **kwargs)
        chex.assert_trees_all_equal(out, again)


def _tree(
    node_values, node_visits, children_visits, children_rewards, children_values, *, discount=0.9
):
    """An mctx tree from the fields the qtransform reads: `[..., N]` and `[..., N, A]`."""
    node_values = np.asarray(node_values, np.float32)
    children_visits = np.asarray(children_visits, np.int32)
    nodes, edges = node_values.shape, children_visits.shape
    return mctx.Tree(
        node_visits=np.asarray(node_visits, np.int32),
        raw_values=node_values,
        node_values=node_values,
        parents=np.full(nodes, -1, np.int32),
        action_from_parent=np.full(nodes, -1, np.int32),
        children_index=np.where(children_visits > 0, 1, -1).astype(np.int32),
        children_prior_logits=np.zeros(edges, np.float32),
        children_visits=children_visits,
        children_rewards=np.asarray(children_rewards, np.float32),
        children_discounts=np.full(edges, discount, np.float32),
        children_values=np.asarray(children_values, np.float32),
        embeddings=np.zeros(nodes, np.float32),
        root_invalid_actions=np.zeros(edges[:-2] + edges[-1:], np.float32),
        extra_data=None,
    )


@functools.partial(jax.jit, static_argnames="delta")
def _minmax_all_nodes(tree, delta=0.01):
    """The min-max transform at every node of an unbatched tree: `[nodes, A]`."""
    nodes = jnp.arange(tree.node_values.shape[0])
    return jax.vmap(lambda i: search.qtransform_by_tree_min_max(tree, i, delta=delta))(nodes)


def test_minmax_qtransform_pinned():
    # Root 0 -a0-> node 1 -a0-> node 3, root 0 -a1-> node 2; discount 0.9.
    tree = _tree(
        node_values=[1.0, 2.0, -1.0, 0.0],
        node_visits=[4, 2, 1, 1],
        children_visits=[[2, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]],
        children_rewards=[[1.2, 0, 0], [0.5, 0, 0], [0, 0, 0], [0, 0, 0]],
        children_values=[[2.0, -1.0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]],
    )
    # Visited Q: 1.2 + 0.9 * 2 = 3, 0.9 * -1 = -0.9, 0.5; with the node values the
    # tree spans [-1, 3]. Unvisited actions take the mean of the node value and the
    # visited Q: root (1 + 3 - 0.9) / 3, node 1 (2 + 0.5) / 2, leaves their value.
    expected = (
        np.array([[3.0, -0.9, 3.1 / 3], [0.5, 1.25, 1.25], [-1, -1, -1], [0, 0, 0]]) + 1
    ) / 4
    np.testing.assert_allclose(_minmax_all_nodes(tree), expected, rtol=1e-6)


def test_minmax_qtransform_range_floor():
    # The tree spans [0.002, 0.004]: narrower than delta, so divided by 0.01.
    tree = _tree(
        node_values=[0.002, 0.004],
        node_visits=[2, 1],
        children_visits=[[1, 0], [0, 0]],
        children_rewards=[[0.0, 0.0], [0.0, 0.0]],
        children_values=[[0.004, 0.0], [0.0, 0.0]],
        discount=1.0,
    )
    np.testing.assert_allclose(_minmax_all_nodes(tree)[0], [0.2, 0.1], rtol=1e-5)
    np.testing.assert_allclose(_minmax_all_nodes(tree, delta=0.001)[0], [1.0, 0.5], rtol=1e-5)
    # A tree of one node has no range at all: everything maps to 0, not NaN.
    single = _tree([0.5], [1], [[0, 0]], [[0.0, 0.0]], [[0.0, 0.0]])
    np.testing.assert_array_equal(_minmax_all_nodes(single), [[0, 0]])


def test_minmax_qtransform_in_unit_interval():
    # Random trees: the transform reads only these fields, so they need not come from
    # a search (a search would cost another mctx compilation).
    rng = np.random.default_rng(0)
    num_trees, n, a = 64, 12, 5
    node_visits = rng.integers(0, 3, (num_trees, n)) * (rng.random((num_trees, n)) < 0.7)
    node_visits[:, 0] = 5  # The root is always expanded.
    trees = _tree(
        node_values=10 * rng.normal(size=(num_trees, n)),
        node_visits=node_visits,
        children_visits=rng.integers(0, 2, (num_trees, n, a)) * (node_visits[..., None] > 0),
        children_rewards=rng.normal(size=(num_trees, n, a)),
        children_values=10 * rng.normal(size=(num_trees, n, a)),
    )
    scores = jax.vmap(_minmax_all_nodes)(trees)  # [trees, nodes, A]
    expanded = node_visits > 0
    assert np.all(np.isfinite(scores))
    assert np.all((scores[expanded] >= 0) & (scores[expanded] <= 1 + 1e-6))
    assert np.ptp(scores[expanded]) > 0.5


def test_completed_minmax_qtransform_pinned():
    # Root 0 -a0-> node 1, root 0 -a1-> node 2, a2 unvisited; discount 1, uniform prior.
    # Visited Q: 1.0 + 1.0 = 2.0 and 0.0 + 1.02 = 1.02; the tree spans [-1, 2] (node 3).
    tree = _tree(
        node_values=[0.5, 1.0, 1.02, -1.0],
        node_visits=[3, 1, 1, 1],
        children_visits=[[1, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]],
        children_rewards=[[1.0, 0.0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]],
        children_values=[[1.0, 1.02, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]],
        discount=1.0,
    )
    # The unvisited action takes the mixed value (0.5 + 2 * (2.0 + 1.02) / 2) / 3; all are
    # divided by the tree's range 3 after subtracting its min, then scaled by (50 + 1) / 10.
    mixed = (0.5 + 2 * (2.0 + 1.02) / 2) / 3
    expected = (np.array([2.0, 1.02, mixed]) + 1) / 3 * 5.1
    scores = search.qtransform_completed_by_tree_min_max(tree, jnp.int32(0))
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    # mctx's transform stretches the root's own completed Q-values to [0, 1] instead.
    np.testing.assert_allclose(mctx.qtransform_completed_by_mix_value(tree, jnp.int32(0)),
                               (np.array([2.0, 1.02, mixed]) - 1.02) / 0.98 * 5.1, rtol=1e-5)


def test_completed_minmax_keeps_alike_siblings_alike():
    # Two root actions whose Q differ by 0.002 of noise: mctx's per-node rescaling makes
    # that the whole scale (a 5.1-logit preference); the tree's range or the floor does not.
    tree = _tree(
        node_values=[0.0, 0.001, -0.001],
        node_visits=[3, 1, 1],
        children_visits=[[1, 1], [0, 0], [0, 0]],
        children_rewards=[[0.0, 0.0]] * 3,
        children_values=[[0.001, -0.001], [0, 0], [0, 0]],
        discount=1.0,
    )
    per_node = mctx.qtransform_completed_by_mix_value(tree, jnp.int32(0))
    assert float(per_node[0] - per_node[1]) == pytest.approx(5.1, rel=1e-5)
    floored = search.qtransform_completed_by_tree_min_max(tree, jnp.int32(0), delta=0.01)
    assert float(floored[0] - floored[1]) == pytest.approx(5.1 * 0.002 / 0.01, rel=1e-4)


@pytest.mark.parametrize("kind", ["gumbel", "muzero"])
def test_invalid_actions_never_chosen(kind):
    # Row 0 forbids the rewarding action 2; row 1 allows only actions 1 and 3.
    invalid = jnp.array([[0, 0, 1, 0], [1, 0, 1, 0]] * 4, jnp.float32)  # [8, 4]
    states = jnp.zeros(8, jnp.int32)
    # A high temperature must not make invalid (never visited) actions likely.
    temperatures = [1.0, 10.0] if kind == "muzero" else [1.0]
    for seed, temperature in itertools.product(range(3), temperatures):
        out = _plan_tables(
            _golden_params(), _key(seed), states, invalid, kind=kind, temperature=temperature
        )
        chosen = np.asarray(invalid)[np.arange(8), np.asarray(out.action)]
        assert not chosen.any()
        assert np.all(np.asarray(out.action_weights)[np.asarray(invalid) == 1] == 0)
        np.testing.assert_allclose(out.action_weights.sum(-1), 1, rtol=1e-5)


def test_muzero_temperature_zero_is_argmax_of_visits():
    params = _random_params(2)
    states = jnp.arange(8) % _TRANSITIONS.shape[0]
    for seed in range(4):
        out = _plan_tables(params, _key(seed), states, kind="muzero", temperature=0.0)
        weights = np.asarray(out.action_weights)
        chosen = weights[np.arange(len(weights)), np.asarray(out.action)]
        np.testing.assert_array_equal(chosen, weights.max(axis=-1))
    # At temperature 1 the action is sampled from the visits instead.
    actions = [
        _plan_tables(params, _key(seed), states, kind="muzero", temperature=1.0).action
        for seed in range(4)
    ]
    assert len({tuple(np.asarray(a)) for a in actions}) > 1


def test_greedy_visit_ties_go_to_the_highest_q():
    # With few simulations visit ties are common; the first action ("stay" in many envs)
    # must not win them by position.
    visits = jnp.array([[2.0, 2.0, 1.0], [3.0, 1.0, 3.0]])
    qvalues = jnp.array([[0.1, 0.5, 0.9], [0.7, 0.9, 0.2]])
    action = search.planner._act_on_visits(_key(0), visits, qvalues, 0.0)
    np.testing.assert_array_equal(action, [1, 0])


def test_dirichlet_noise_only_when_fraction_positive():
    # Zero rewards, zero values and uniform priors: without noise pUCT spreads the
    # simulations evenly over the actions whatever the rng; noise tilts the root prior.
    num_states, num_actions = _TRANSITIONS.shape
    params = dict(
        transitions=jnp.zeros((num_states, num_actions), jnp.int32),
        rewards=jnp.zeros((num_states, num_actions)),
        values=jnp.zeros(num_states),
        logits=jnp.zeros((num_states, num_actions)),
    )
    states = jnp.zeros(8, jnp.int32)
    for seed in range(3):
        clean = _plan_tables(params, _key(seed), states, kind="muzero", dirichlet_fraction=0.0)
        np.testing.assert_array_equal(clean.action_weights, np.full((8, 4), 0.25))
        noisy = _plan_tables(params, _key(seed), states, kind="muzero", dirichlet_fraction=0.25)
        assert np.any(np.asarray(noisy.action_weights) != 0.25)


def test_bad_options_raise():
    states = jnp.zeros(1, jnp.int32)
    with pytest.raises(ValueError, match="qtransform"):
        _plan_tables(_golden_params(), _key(0), states, kind="gumbel", qtransform="maxmin")
    with pytest.raises(ValueError, match="kind"):
        _plan_tables(_golden_params(), _key(0), states, kind="alphazero")


# --- The adapter to the learned world model, at a tiny size. ---

_TINY = dict(
    channels=8,
    num_blocks=1,
    downsample=False,
    head_channels=4,
    head_hidden=16,
    vector_hidden=16,
    lstm_hidden=16,
    lstm_horizon=3,
    support_size=10,
    reward_support_size=10,
    proj_hidden=16,
    proj_out=16,
    pred_hidden=16,
)


def _tiny_model(obs_shape, num_actions):
    """A tiny world model with perturbed params: the zero-initialised heads would make
    every reward and value 0, and the tests below would pass vacuously."""
    cfg = world_model.ModelConfig(**_TINY)
    graphdef, params = world_model.make_model(cfg, obs_shape, num_actions, seed=0)
    rng = np.random.default_rng(0)  # numpy: jax samplers would compile per leaf shape
    return cfg, graphdef, jax.tree.map(lambda x: x + 0.5 * rng.normal(size=x.shape), params)


_SHAPES = dict(vector_model=((6,), 3), image_model=((8, 8, 6), 4))  # obs_shape, num_actions


@pytest.fixture(scope="module")
def vector_model():
    return _tiny_model(*_SHAPES["vector_model"])


@pytest.fixture(scope="module")
def image_model():
    return _tiny_model(*_SHAPES["image_model"])


_initial_inference = jax.jit(world_model.initial_inference, static_argnums=0)
_recurrent_inference = jax.jit(world_model.recurrent_inference, static_argnums=0)


def _observations(obs_shape, batch):
    rng = np.random.default_rng(0)
    if len(obs_shape) == 3:
        return jnp.asarray(rng.integers(0, 256, (batch, *obs_shape)), jnp.uint8)
    return jnp.asarray(rng.normal(size=(batch, *obs_shape)), jnp.float32)


def test_value_prefix_rewards_along_deep_path(vector_model):
    cfg, graphdef, params = vector_model
    batch, depth = 2, 8  # depth 8 crosses two LSTM resets (horizon 3)
    obs = _observations((6,), batch)
    recurrent_fn = search.model_recurrent_fn(graphdef, discount=0.9)

    steer = jnp.array([20.0, -20.0, -20.0])  # [A]

    def steered_fn(params, rng, action, state):
        # Overrides only the priors, so that below the root (where the other actions
        # are masked) the search walks down action 0 and every simulation adds one node
        # to a single path.
        output, state = recurrent_fn(params, rng, action, state)
        return output.replace(prior_logits=jnp.broadcast_to(steer, (batch, 3))), state

    @jax.jit  # mctx directly rather than `plan`, to read the tree.
    def search_tree(params, obs):
        root = search.model_root(graphdef, params, obs)
        only_first = jnp.broadcast_to(jnp.array([0, 1, 1]), (batch, 3))
        return mctx.gumbel_muzero_policy(
            params, _key(0), root, steered_fn, num_simulations=depth, invalid_actions=only_first
        ).search_tree

    tree = search_tree(params, obs)
    # A single path: node k + 1 is the child of node k.
    np.testing.assert_array_equal(tree.parents[:, 1:], np.tile(np.arange(depth), (batch, 1)))
    np.testing.assert_array_equal(
        tree.embeddings.steps, np.tile([0, 1, 2, 3, 1, 2, 3, 1, 2], (batch, 1))
    )

    # Hand computation from direct model calls: reward_k = prefix_k - prefix_{k-1},
    # except on the first step of each horizon, where the LSTM and prefix restart at 0.
    state = _initial_inference(graphdef, params, obs).state
    prefixes = []
    for _ in range(depth):
        state = _recurrent_inference(graphdef, params, state, jnp.zeros(batch, jnp.int32)).state
        prefixes.append(state.prefix)
    prefixes = np.stack(prefixes, axis=1)  # [B, depth]
    previous = np.concatenate([np.zeros((batch, 1)), prefixes[:, :-1]], axis=1)
    restart = np.arange(depth) % cfg.lstm_horizon == 0
    expected = prefixes - np.where(restart, 0.0, previous)
    assert np.abs(expected).max() > 0.1  # The perturbed model predicts non-zero rewards.
    np.testing.assert_allclose(tree.children_rewards[:, :depth, 0], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tree.children_discounts[:, :depth, 0], 0.9)


@pytest.mark.parametrize(
    ("model", "kind", "qtransform"),
    [("image_model", "gumbel", "default"), ("vector_model", "muzero", "minmax"),
     ("vector_model", "gumbel", "minmax")],
)
def test_plan_end_to_end_under_jit(model, kind, qtransform, request):
    _, graphdef, params = request.getfixturevalue(model)
    obs_shape, num_actions = _SHAPES[model]
    obs = _observations(obs_shape, 4)

    @jax.jit(static_argnames=("recurrent_fn",))
    def act(params, rng, obs, invalid_actions, recurrent_fn):
        root = search.model_root(graphdef, params, obs)
        return search.plan(
            params,
            rng,
            root,
            recurrent_fn,
            num_simulations=8,
            kind=kind,
            invalid_actions=invalid_actions,
            qtransform=qtransform,
        )

    invalid = jnp.zeros((4, num_actions)).at[:, 0].set(1)
    out = act(params, _key(0), obs, invalid, search.model_recurrent_fn(graphdef, discount=0.99))
    # A fresh but equal recurrent_fn hits the compilation cache.
    act(params, _key(1), obs, invalid, search.model_recurrent_fn(graphdef, discount=0.99))
    assert act._cache_size() == 1

    chex.assert_shape(out.action_weights, (4, num_actions))
    chex.assert_shape([out.action, out.root_value, out.greedy_value, out.network_value], (4,))
    chex.assert_tree_all_finite(out)
    assert np.all(np.asarray(out.action) != 0)
    np.testing.assert_array_equal(out.action_weights[:, 0], 0)
    np.testing.assert_allclose(out.action_weights.sum(-1), 1, rtol=1e-5)
    root_value = _initial_inference(graphdef, params, obs).value
    np.testing.assert_allclose(out.network_value, root_value, rtol=1e-5, atol=1e-6)
    assert not np.allclose(out.root_value, out.network_value)  # Search moved the value.


# A hand-built 1-D task over Box actions: the state is a position x, an action a in
# [-1, 1] moves it to x + a and pays -|x + a|; values are 0. Every node offers the same
# four arms (pre-tanh), whose actions are +0.9, -0.6, 0.0 and -0.95; from x = 0.6 the
# best first action is -0.6 (reward 0), which the search must find: the prior is flat.
_ARM_ACTIONS = np.array([0.9, -0.6, 0.0, -0.95])
_ARMS = jnp.asarray(np.arctanh(_ARM_ACTIONS)[:, None], jnp.float32)  # [S, 1]


def _line_recurrent_fn(params, rng, arm, embedding):
    del params, rng
    action = jnp.tanh(jnp.take_along_axis(embedding.arms, arm[:, None, None], axis=1)[:, 0, 0])
    position = embedding.state + action  # [B]
    output = mctx.RecurrentFnOutput(
        reward=-jnp.abs(position), discount=jnp.full_like(position, 0.9),
        prior_logits=jnp.zeros((position.shape[0], len(_ARM_ACTIONS))),
        value=jnp.zeros_like(position))
    return output, search.SampledEmbedding(state=position, arms=embedding.arms)


@pytest.mark.parametrize("kind", ["gumbel", "muzero"])
def test_golden_sampled_search_moves_towards_zero(kind):
    positions = jnp.array([0.6, -0.9])  # best first actions: -0.6 and +0.9
    arms = jnp.broadcast_to(_ARMS, (2, *_ARMS.shape))  # [B, S, 1]
    root = mctx.RootFnOutput(prior_logits=jnp.zeros((2, len(_ARM_ACTIONS))),
                             value=jnp.zeros(2),
                             embedding=search.SampledEmbedding(state=positions, arms=arms))
    greedy = dict(gumbel_scale=0.0) if kind == "gumbel" else dict(temperature=0.0,
                                                                  dirichlet_fraction=0.0)
    out = jax.jit(functools.partial(search.plan, recurrent_fn=_line_recurrent_fn,
                                    num_simulations=16, kind=kind, **greedy))(
        None, _key(0), root)
    np.testing.assert_allclose(out.action, [[-0.6], [0.9]], rtol=1e-6)
    np.testing.assert_array_equal(out.arms, arms)
    np.testing.assert_allclose(out.action_weights, _GOLDEN_SAMPLED[kind], atol=1e-4)


# Gumbel: the improved policy puts most weight on the best arm; pUCT: visits, with the
# most on the best arm.
_GOLDEN_SAMPLED = {
    "gumbel": np.array([[0.002697, 0.72924, 0.080409, 0.187655],
                        [0.939435, 0.016143, 0.040948, 0.003474]]),
    "muzero": np.array([[0.0625, 0.5, 0.3125, 0.125], [0.625, 0.125, 0.125, 0.125]]),
}


def test_sampled_root_priors():
    params = jnp.array([[0.5, 0.0]])  # mean 0.5, std ~1 (pre-tanh)
    out = world_model.ModelOutput(
        state=None, reward=jnp.zeros(1), reward_logits=jnp.zeros((1, 1)), policy_logits=params,
        value=jnp.zeros(1), value_logits=jnp.zeros((1, 1)))
    narrow = search.sampled_root(_key(0), out, num_arms=6)
    chex.assert_shape(narrow.embedding.arms, (1, 6, 1))
    np.testing.assert_array_equal(narrow.prior_logits, 0.0)  # drawn from the policy: equal
    wide = search.sampled_root(_key(0), out, num_arms=6, wide_arms=2)
    arms = wide.embedding.arms[0, :, 0]
    assert np.abs(arms[4:] - 0.5).mean() > np.abs(arms[:4] - 0.5).mean()  # the wide ones
    # policy / proposal: below 1 far from the mean, where the wide proposal dominates.
    ratio = np.exp(np.asarray(wide.prior_logits[0]))
    far = np.abs(np.asarray(arms) - 0.5) > 2.0
    assert ratio.max() <= 1 / (4 / 6) + 1e-5 and np.all(ratio[far] < 1.0)


def test_sampled_plan_on_the_learned_model():
    cfg = world_model.ModelConfig(
        channels=4, num_blocks=1, head_channels=2, head_hidden=8, vector_hidden=16,
        lstm_hidden=8, lstm_horizon=3, support_size=5, reward_support_size=5, proj_hidden=8,
        proj_out=8, pred_hidden=8)
    graphdef, params = world_model.make_model(cfg, (6,), 0, action_dim=2, seed=0)
    obs = _observations((6,), 4)
    recurrent_fn = search.model_recurrent_fn(graphdef, discount=0.99, num_arms=5)

    @jax.jit
    def act(params, rng, obs):
        root_rng, rng = jax.random.split(rng)
        out = world_model.initial_inference(graphdef, params, obs)
        root = search.sampled_root(root_rng, out, num_arms=5, wide_arms=1)
        return search.plan(params, rng, root, recurrent_fn, num_simulations=8)

    out = act(params, _key(0), obs)
    chex.assert_shape([out.action], (4, 2))
    chex.assert_shape([out.action_weights], (4, 5))
    chex.assert_shape([out.arms], (4, 5, 2))
    chex.assert_tree_all_finite(out)
    assert np.abs(np.asarray(out.action)).max() <= 1.0
    chosen = np.argmax(np.all(np.isclose(np.tanh(out.arms), np.asarray(out.action)[:, None]),
                              axis=-1), axis=1)
    np.testing.assert_allclose(np.tanh(out.arms[np.arange(4), chosen]), out.action, rtol=1e-6)
    np.testing.assert_allclose(out.action_weights.sum(-1), 1, rtol=1e-5)
