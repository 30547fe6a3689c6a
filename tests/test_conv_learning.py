"""The conv world model learns: on catch drawn 4 px a cell (40 x 40, large enough to take
the conv stem), its dynamics learn from replayed random play which moves catch the ball.

Images past `model.max_flat_image` (Atari frames, any large custom image) go through this
path: the ResNet stem, conv dynamics, the value-prefix LSTM over reduced latents and the
SimSiam projection. RL through it costs minutes a run on 2 cores, so this test trains the
world model alone, with the default preset's sizes and loss, on windows whose unroll holds
a landing ball, half caught and half missed. Held out, the model must tell from the root
frame and the actions alone whether the ball lands on the paddle: the landing reward
(+1 caught, -1 missed) predicted through 1 to K dynamics steps. A model that ignores the
actions or the ball's column predicts the same for both.

Each model first sits on the plateau of predicting the mean landing (0) and leaves it
between 400 and 1,000 updates depending on the seed; at 1,200 updates the gap between
the two kinds' mean predictions was 1.08, 1.36 and 1.24 on seeds 2, 4 and 5 (the truth:
2), the mean over each kind of held-out landing.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agent import config as config_lib
from agent.envs import make_env
from world_model import Batch, compute_loss, initial_inference, make_model, recurrent_inference

NUM_ACTIONS = 3  # catch: left, stay, right
SCALE = 4  # pixels a side of a catch cell: 40 x 40 frames, latent 10 x 10 after two halvings
K = 3  # unroll steps; the landing falls on one of them
BATCH = 32
UPDATES = 1_200
MIN_GAP = 0.8  # mean predicted reward, caught minus missed landings (true gap 2)


def _random_play(steps: int, seed: int) -> dict[str, np.ndarray]:
    """[T, N, ...] frames before each step, actions, rewards and episode ends."""
    env = make_env("catch", num_envs=8, seed=seed, frame_stack=1)
    rng = np.random.default_rng(seed)
    obs = env.reset()
    frames, actions, rewards, ends = [], [], [], []
    for _ in range(steps):
        action = rng.integers(env.num_actions, size=env.num_envs)
        step = env.step(action)
        frames.append(obs)
        actions.append(action)
        rewards.append(step.reward)
        ends.append(step.terminated | step.truncated)
        obs = step.obs
    env.close()
    big = np.stack(frames).repeat(SCALE, axis=2).repeat(SCALE, axis=3)  # [T, N, 40, 40, 1]
    return dict(frames=big, actions=np.stack(actions), rewards=np.stack(rewards),
                ends=np.stack(ends))


def _windows(play: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t, n) of every window of K steps inside one episode with a landing, its sign, and
    the unroll step it lands on (1..K)."""
    t_max = play["rewards"].shape[0] - K
    starts, signs, at = [], [], []
    for t in range(t_max):
        for n in range(play["rewards"].shape[1]):
            if play["ends"][t:t + K - 1, n].any():
                continue  # the next frame after an end is a new episode's
            landed = np.flatnonzero(play["rewards"][t:t + K, n])
            if landed.size:
                starts.append((t, n))
                signs.append(play["rewards"][t + landed[0], n])
                at.append(landed[0] + 1)
    return np.array(starts), np.array(signs), np.array(at)


def _batch(play, starts: np.ndarray) -> Batch:
    t, n = starts[:, 0], starts[:, 1]
    steps = t[:, None] + np.arange(K + 1)  # [B, K+1]
    b = len(starts)
    return Batch(
        observations=jnp.asarray(play["frames"][steps, n[:, None]]),  # [B, K+1, 40, 40, 1]
        actions=jnp.asarray(play["actions"][steps[:, :K], n[:, None]], jnp.int32),  # [B, K]
        target_rewards=jnp.asarray(play["rewards"][steps[:, :K], n[:, None]]),  # [B, K]
        target_values=jnp.zeros((b, K + 1)),
        target_policies=jnp.full((b, K + 1, NUM_ACTIONS), 1.0 / NUM_ACTIONS),
        mask=jnp.ones((b, K + 1)),
        value_mask=jnp.zeros((b, K + 1)),  # no values to learn from random play
        reward_mask=jnp.ones((b, K)),
        weights=jnp.ones((b,)),
    )


def _landing_rewards(graphdef, params, play, starts, signs, at) -> tuple[float, float]:
    """Mean predicted reward of the held-out caught (+1) and missed (-1) landings."""
    batch = _batch(play, starts)

    @jax.jit
    def predicted_rewards(params):  # [B, K]
        out = initial_inference(graphdef, params, batch.observations[:, 0])
        rewards = []
        for k in range(K):
            out = recurrent_inference(graphdef, params, out.state, batch.actions[:, k])
            rewards.append(out.reward)
        return jnp.stack(rewards, axis=1)

    landing = np.asarray(predicted_rewards(params))[np.arange(len(at)), at - 1]  # [B]
    return float(np.mean(landing[signs > 0])), float(np.mean(landing[signs < 0]))


@pytest.mark.xdist_group("learns_conv")
def test_conv_world_model_learns_which_moves_catch_the_ball():
    preset = config_lib.quickstart()
    model_cfg = dataclasses.replace(preset.model, max_flat_image=0)  # the conv path
    train_play, test_play = _random_play(3_000, seed=0), _random_play(400, seed=1)
    obs_shape = train_play["frames"].shape[2:]
    graphdef, params = make_model(model_cfg, obs_shape, NUM_ACTIONS, seed=0)
    latent = initial_inference(graphdef, params, train_play["frames"][0, :1]).state.latent
    assert latent.shape == (1, 10, 10, model_cfg.channels)  # the stem halved 40 twice

    starts, signs, _ = _windows(train_play)
    caught, missed = starts[signs > 0], starts[signs < 0]
    test_windows = _windows(test_play)
    before = _landing_rewards(graphdef, params, test_play, *test_windows)

    optimizer = optax.adamw(preset.optim.learning_rate, weight_decay=0.0)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def update(params, opt_state, batch):
        grads, _ = jax.grad(compute_loss, argnums=1, has_aux=True)(
            graphdef, params, batch, preset.loss)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rng = np.random.default_rng(0)
    opt_state = optimizer.init(params)
    for _ in range(UPDATES):
        # Caught balls are 1 landing in 10 under random play: half of each batch.
        pick = np.concatenate([caught[rng.integers(len(caught), size=BATCH // 2)],
                               missed[rng.integers(len(missed), size=BATCH // 2)]])
        params, opt_state = update(params, opt_state, _batch(train_play, pick))

    after = _landing_rewards(graphdef, params, test_play, *test_windows)
    assert abs(before[0] - before[1]) < 0.1, before  # the untrained model predicts 0 for both
    assert after[0] - after[1] >= MIN_GAP, (before, after)
