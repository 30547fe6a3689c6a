import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from model_params import perturbed

from world_model import (
    ModelConfig,
    ModelState,
    decayed,
    from_logits,
    initial_inference,
    make_model,
    project,
    recurrent_inference,
    with_frame_mean,
)
from world_model.networks import _Keypoints, _scale_gradient

TINY = ModelConfig(
    channels=8, num_blocks=1, head_channels=4, head_hidden=8, vector_hidden=16,
    lstm_hidden=16, lstm_horizon=3, support_size=10, reward_support_size=10,
    proj_hidden=32, proj_out=32, pred_hidden=16, max_flat_image=0,
)  # fmt: skip
NUM_ACTIONS = 3
BATCH = 2

# Tiny models run a few times: compiling without LLVM optimisations saves test time.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}
# graphdef is static and hashable: jit with static_argnums=0, or close over it (below).
_initial = jax.jit(initial_inference, static_argnums=0, compiler_options=_FAST_COMPILE)
_decode = jax.jit(from_logits, static_argnums=1, compiler_options=_FAST_COMPILE)


@functools.partial(jax.jit, static_argnums=0, compiler_options=_FAST_COMPILE)
def _root_step_and_projections(graphdef, params, obs, action):
    """One compiled program per model keeps the test fast."""
    root = initial_inference(graphdef, params, obs)
    out = recurrent_inference(graphdef, params, root.state, action)
    projections = [project(graphdef, params, out.state.latent, predict=p) for p in (False, True)]
    return root, out, projections


def _observations(obs_shape, seed=0):
    rng = np.random.default_rng(seed)
    if len(obs_shape) == 3:
        return jnp.asarray(rng.integers(0, 256, (BATCH, *obs_shape), dtype=np.uint8))
    return jnp.asarray(rng.normal(size=(BATCH, *obs_shape)), jnp.float32)


@pytest.mark.parametrize(
    ("obs_shape", "overrides", "latent_shape"),
    [
        ((96, 96, 12), {}, (6, 6, 8)),
        ((48, 48, 3), {}, (6, 6, 8)),
        ((10, 10, 4), {"downsample": False, "action_embedding": True}, (10, 10, 8)),
        ((10, 10, 4), {"max_flat_image": 400}, (16,)),
        ((48, 48, 3), {"max_flat_image": 8192, "keypoints": 4}, (16,)),
        ((7,), {"value_prefix": False, "num_blocks": 0}, (16,)),
        ((7,), {"action_embedding": True}, (16,)),
    ],
    ids=["image-96-downsample", "image-48-downsample", "image-10-embedding", "image-10-flat",
         "image-48-keypoints",
         "vector-reward", "vector-embedding"],
)
def test_inference_shapes_dtypes_and_latent_range(obs_shape, overrides, latent_shape):
    cfg = dataclasses.replace(TINY, **overrides)
    graphdef, params = make_model(cfg, obs_shape, NUM_ACTIONS, seed=0)
    action = jnp.array([0, NUM_ACTIONS - 1], jnp.int32)
    root, out, projections = _root_step_and_projections(
        graphdef, params, _observations(obs_shape), action
    )
    carry = 16 if cfg.value_prefix else 0
    assert root.state.latent.shape == out.state.latent.shape == (BATCH, *latent_shape)
    assert root.state.latent.dtype == out.state.latent.dtype == jnp.float32
    assert root.state.lstm_h.shape == out.state.lstm_c.shape == (BATCH, carry)
    assert root.state.steps.dtype == jnp.int32
    np.testing.assert_array_equal(root.state.steps, 0)
    np.testing.assert_array_equal(out.state.steps, 1)
    np.testing.assert_array_equal(root.reward, 0.0)
    np.testing.assert_array_equal(root.reward_logits, np.zeros((BATCH, 21)))
    expected = {
        "reward": (BATCH,), "reward_logits": (BATCH, 21), "policy_logits": (BATCH, NUM_ACTIONS),
        "value": (BATCH,), "value_logits": (BATCH, 21),
    }  # fmt: skip
    for output in (root, out):
        for name, shape in expected.items():
            assert getattr(output, name).shape == shape, name
            assert getattr(output, name).dtype == jnp.float32, name
        latent = output.state.latent.reshape(BATCH, -1)
        np.testing.assert_allclose(latent.min(-1), 0.0, atol=1e-6)
        np.testing.assert_allclose(latent.max(-1), 1.0, atol=1e-6)
    for projection in projections:
        assert projection.shape == (BATCH, 32) and projection.dtype == jnp.float32


def test_heads_start_at_zero_value_and_uniform_policy():
    graphdef, params = make_model(TINY, (7,), NUM_ACTIONS, seed=0)
    root = _initial(graphdef, params, _observations((7,)))
    np.testing.assert_allclose(root.value, 0.0, atol=1e-5)
    np.testing.assert_array_equal(root.policy_logits, 0.0)


def test_value_prefix_resets_at_the_lstm_horizon():
    cfg = TINY  # lstm_horizon 3: unroll 7 steps, two resets
    graphdef, params = make_model(cfg, (7,), NUM_ACTIONS, seed=0)
    params = perturbed(params, scale=0.5)
    state = _initial(graphdef, params, _observations((7,))).state
    # graphdef closed over
    step = jax.jit(functools.partial(recurrent_inference, graphdef), compiler_options=_FAST_COMPILE)
    actions = jnp.asarray(np.random.default_rng(1).integers(0, NUM_ACTIONS, (7, BATCH)), jnp.int32)

    previous_prefix = np.zeros(BATCH, np.float32)
    for k, action in enumerate(actions):
        if k % cfg.lstm_horizon == 0:
            previous_prefix[:] = 0.0
            # After a reset the step equals one from a fresh LSTM state with the same latent.
            fresh = ModelState(
                latent=state.latent, lstm_h=jnp.zeros_like(state.lstm_h),
                lstm_c=jnp.zeros_like(state.lstm_c), prefix=jnp.zeros(BATCH),
                steps=jnp.zeros(BATCH, jnp.int32),
            )  # fmt: skip
            reference = step(params, fresh, action)
        out = step(params, state, action)
        prefix = np.asarray(_decode(out.reward_logits, cfg.reward_support_size))
        np.testing.assert_allclose(out.state.prefix, prefix, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.reward, prefix - previous_prefix, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(out.state.steps, k % cfg.lstm_horizon + 1)
        if k % cfg.lstm_horizon == 0:
            np.testing.assert_allclose(out.reward_logits, reference.reward_logits, atol=1e-5)
            np.testing.assert_allclose(out.state.lstm_h, reference.state.lstm_h, atol=1e-6)
        previous_prefix[:] = prefix
        state = out.state
    assert np.abs(previous_prefix).max() > 1e-3  # the check above was not trivially 0 - 0


@pytest.mark.parametrize("reward_bin_width", [1.0, 0.1])
def test_plain_reward_mode_decodes_the_reward_logits(reward_bin_width):
    # The reward's bins have their own width; the value's are 1 wide.
    cfg = dataclasses.replace(TINY, value_prefix=False, num_blocks=0,
                              reward_bin_width=reward_bin_width)
    graphdef, params = make_model(cfg, (7,), NUM_ACTIONS, seed=0)
    params = perturbed(params, scale=0.5)
    root, out, _ = _root_step_and_projections(
        graphdef, params, _observations((7,)), jnp.array([1, 2], jnp.int32)
    )
    expected = _decode(out.reward_logits, cfg.reward_support_size, bin_width=reward_bin_width)
    np.testing.assert_allclose(out.reward, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(root.value, _decode(root.value_logits, cfg.support_size),
                               rtol=1e-5, atol=1e-6)


def test_same_config_gives_equal_graphdefs_and_seeded_params():
    cfg = dataclasses.replace(TINY, value_prefix=False, num_blocks=0)
    graphdef_a, params_a = make_model(cfg, (7,), NUM_ACTIONS, seed=0)
    graphdef_b, params_b = make_model(cfg, (7,), NUM_ACTIONS, seed=0)
    _, params_c = make_model(cfg, (7,), NUM_ACTIONS, seed=1)
    assert graphdef_a == graphdef_b and hash(graphdef_a) == hash(graphdef_b)  # one jit cache entry
    leaves_a, leaves_b, leaves_c = (jax.tree.leaves(p) for p in (params_a, params_b, params_c))
    assert all(leaf.dtype == jnp.float32 for leaf in leaves_a)
    assert all(np.array_equal(a, b) for a, b in zip(leaves_a, leaves_b, strict=True))
    assert not all(np.array_equal(a, c) for a, c in zip(leaves_a, leaves_c, strict=True))


def test_scale_gradient_is_identity_forward_and_scales_backward():
    x = jnp.array([1.0, -2.0, 3.0])
    value, grad = jax.jit(jax.value_and_grad(lambda x: jnp.sum(3.0 * _scale_gradient(x, 0.5))))(x)
    assert value == 6.0
    np.testing.assert_allclose(grad, 1.5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"channels": 0}, "model.channels must be > 0"),
        ({"channels": 7}, "model.channels must be even"),
        ({"num_blocks": -1}, "model.num_blocks must be >= 0"),
        ({"lstm_horizon": 0}, "model.lstm_horizon must be > 0"),
        ({"reward_bin_width": 0.0}, "model.reward_bin_width must be > 0"),
    ],
)
def test_config_validation_names_the_fix(overrides, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TINY, **overrides)


def test_make_model_rejects_bad_shapes():
    with pytest.raises(ValueError, match="obs_shape"):
        make_model(TINY, (4, 4), NUM_ACTIONS, seed=0)
    with pytest.raises(ValueError, match="num_actions"):
        make_model(TINY, (7,), 0, seed=0)


@pytest.mark.parametrize(("side", "positions"), [(10, 10), (48, 24)])
def test_keypoints_move_with_their_object_along_its_axis_only(side, positions):
    """An object moved along a row moves every keypoint's column, never its row (the frame
    around it is uniform), and the stem halves frames from 24 px up."""
    keypoints = _Keypoints((side, side, 3), 4, rngs=nnx.Rngs(0))
    frames = np.zeros((2, side, side, 3), np.uint8)
    row, col = side // 2, side // 3  # away from the edges; moved by one stride
    stride = side // positions
    frames[0, row : row + stride, col : col + stride] = (255, 200, 0)
    frames[1, row : row + stride, col + stride : col + 2 * stride] = (255, 200, 0)
    out = np.asarray(jax.jit(keypoints)(jnp.asarray(frames)))  # [2, 8]: 4 rows, then 4 columns
    assert out.shape == (2, 8) and np.abs(out).max() <= 1.0
    np.testing.assert_allclose(out[0, :4], out[1, :4], atol=1e-6)  # rows stay
    assert np.all(np.abs(out[0, 4:] - out[1, 4:]) > 1e-4)  # every column moves


def _pong_like_frames(count: int, side: int = 32, stack: int = 2) -> np.ndarray:
    """[count, side, side, stack] uint8: one gray background, a 1-px ball at a new place in
    each, as in a downscaled Pong frame."""
    frames = np.full((count, side, side, stack), 144, np.uint8)
    for i in range(count):
        frames[i, 4 + 3 * i, 5 + 2 * i] = 236
    return frames


@pytest.mark.parametrize("keypoints", [0, 4])
def test_centred_frames_tell_apart_what_an_uncentred_model_barely_sees(keypoints):
    """Frames that differ by one small object: the uncentred latents are nearly one point
    (the shared background dominates each sample's normalisation), the centred ones spread
    ten times as far. The frame mean is the input's only change: same seed, same weights."""
    frames = _pong_like_frames(8)
    spreads = {}
    for center in (False, True):
        cfg = dataclasses.replace(TINY, max_flat_image=8192, keypoints=keypoints,
                                  center_frames=center)
        graphdef, params = make_model(cfg, frames.shape[1:], NUM_ACTIONS, seed=0)
        params = with_frame_mean(graphdef, params, jnp.asarray(frames[..., :1]))
        latent = _initial(graphdef, params, jnp.asarray(frames)).state.latent  # [8, F]
        spreads[center] = float(jnp.std(latent, axis=0).mean())
    assert spreads[True] > 10 * spreads[False], spreads


def test_frame_mean_is_the_plays_mean_over_the_stack_and_is_not_decayed():
    cfg = dataclasses.replace(TINY, center_frames=True)
    frames = _pong_like_frames(4, stack=1)  # single frames [4, 32, 32, 1]
    graphdef, params = make_model(cfg, (32, 32, 3), NUM_ACTIONS, seed=0)  # a stack of 3
    centred = with_frame_mean(graphdef, params, jnp.asarray(frames))
    mean = np.asarray(centred["frame_mean"][...])
    np.testing.assert_allclose(mean, np.repeat(frames.mean(0) / 255.0, 3, axis=-1), atol=1e-6)
    # A frame equal to the mean enters the centred model as black enters the uncentred one.
    plain = _initial(graphdef, params, jnp.zeros((1, 32, 32, 3), jnp.uint8)).value_logits
    at_mean = _initial(graphdef, centred, jnp.asarray(mean[None] * 255.0)).value_logits
    np.testing.assert_allclose(at_mean, plain, atol=1e-5)
    mask = decayed(params)
    assert mask["frame_mean"] is False
    assert sum(not m for m in jax.tree.leaves(mask)) == 1  # every other weight is decayed
    # Models without centring (vector observations, or the flag off) are left as they are.
    graphdef, params = make_model(TINY, (7,), NUM_ACTIONS, seed=0)
    assert with_frame_mean(graphdef, params, jnp.zeros((2, 4, 4, 1))) is params
