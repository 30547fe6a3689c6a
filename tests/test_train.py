"""End-to-end training: each step compiles once, updates follow the replay ratio, scores.

Faults (kills, signals, bad checkpoints and data) are in test_faults.py."""

import collections
import dataclasses
import json
import logging

import jax
import numpy as np
import pytest

from agent import config as config_lib
from agent.envs import make_env
from agent.train import train, updates_due


def test_training_loop_compiles_each_step_once(tmp_path, caplog):
    # The run crosses both temperature changes, a periodic and the final evaluation. Its
    # env steps and replay ratio are the fault tests' runs' (test_faults.FAST), whose
    # programs are then in the compilation cache, so clearing the caches costs no compile.
    smoke = config_lib.smoke()
    cfg = dataclasses.replace(
        smoke, logdir=str(tmp_path),
        train=dataclasses.replace(smoke.train, env_steps=200, replay_ratio=0.1),
        log=dataclasses.replace(smoke.log, progress=False, log_interval=100, eval_interval=150))
    assert len(set(cfg.train.temperatures)) > 1
    # `add` is one module-level function: a smoke run earlier in this process (another
    # test in the same worker) would have compiled it already.
    jax.clear_caches()
    with caplog.at_level(logging.WARNING, logger="jax"), jax.log_compiles():
        train(cfg)
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Compiling ")]
    # Eager jnp ops compile under their own names too ("add"): the replay's programs are
    # the ones that take its frame buffer.
    with make_env(cfg.env.name, num_envs=1, seed=0, mode="train", **cfg.env.keywords()) as env:
        frame_shape = ",".join(map(str, env.spec.frame_shape))
    frames = f"uint8[{cfg.env.num_envs},{cfg.replay.capacity // cfg.env.num_envs},{frame_shape}]"
    compiled = collections.Counter(m.split()[1] for m in messages if frames in m)
    compiled["jit(act)"] = sum(m.split()[1] == "jit(act)" for m in messages)
    # `act` twice: the acting search and the greedy evaluation search.
    assert (compiled["jit(update)"], compiled["jit(add)"], compiled["jit(act)"]) == (1, 1, 2), \
        compiled
    # The periodic evaluation runs at 150 env steps though no log line falls due there.
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in records if "eval/mean_return" in r] == [150]


def test_updates_are_spread_to_reach_the_replay_ratio():
    cfg = config_lib.smoke()
    assert updates_due(cfg, cfg.train.start_steps - 1) == 0
    assert updates_due(cfg, cfg.train.env_steps) == cfg.total_updates
    due = [updates_due(cfg, s) for s in range(0, cfg.train.env_steps + 1, 2)]
    assert due == sorted(due)


@pytest.mark.parametrize("name", ["pong"])
def test_atari_eval_reports_human_normalised_score(tmp_path, name):
    from agent.evaluate import write_eval

    result = write_eval(tmp_path, name, 100, [-21.0, -19.0])
    assert result["hns"] == pytest.approx((-20.0 + 20.7) / (14.6 + 20.7))
    assert "hns" not in write_eval(tmp_path, "catch", 100, [1.0])


def test_centred_runs_measure_the_frame_mean_on_the_start_steps_play(tmp_path):
    """`model.center_frames`: before the first update both networks take the mean of the
    frames stored so far (the start steps') as their input centre; it is saved, and the
    updates leave it as measured."""
    from agent import checkpoint as checkpoint_lib
    from agent.train import build

    smoke = config_lib.smoke()
    cfg = dataclasses.replace(
        smoke, logdir=str(tmp_path),
        model=dataclasses.replace(smoke.model, center_frames=True),
        train=dataclasses.replace(smoke.train, env_steps=200, replay_ratio=0.1),
        log=dataclasses.replace(smoke.log, progress=False))
    train(cfg)
    _, _, _, state, replay = build(cfg)
    state, replay, _ = checkpoint_lib.Checkpointer(tmp_path).restore(state=state, replay=replay)
    # The first update is dispatched before its env step's frames are stored.
    first = next(s for s in range(0, cfg.train.env_steps, cfg.env.num_envs)
                 if updates_due(cfg, s) >= 1)
    start_columns = first // cfg.env.num_envs - 1
    assert start_columns >= cfg.train.start_steps // cfg.env.num_envs - 1
    expected = np.asarray(replay.frames[:, :start_columns], np.float32).mean((0, 1)) / 255.0
    for params in (state.params, state.target_params):
        np.testing.assert_allclose(np.asarray(params["frame_mean"][...]), expected, atol=1e-6)
    assert expected.max() > 0  # catch's ball and paddle


def test_augmenting_a_centred_frame_moves_what_moves_and_keeps_the_background_cancelled():
    """DrQ's shift and intensity act on a centring model's input less its frame mean: the
    background (a bright wall, as Pong's) stays exactly on the mean the model subtracts,
    the ball shifts by at most 4 px with its intensity within 10%."""
    from agent.train import augment

    background = np.full((64, 64, 1), 87.0, np.float32)
    background[2:5] = 236.0  # a wall across the frame
    frame = background.copy()
    frame[30, 30] = 255.0  # the ball
    obs = np.broadcast_to(frame.astype(np.uint8), (16, 1, 64, 64, 1))  # [B, T, H, W, C]
    centred = np.asarray(augment(jax.random.key(0), obs, background)) - background
    ball = np.zeros(centred.shape, bool)
    ball[..., 26:35, 26:35, :] = True
    np.testing.assert_array_equal(centred[~ball], 0.0)
    peaks = centred.max(axis=(2, 3, 4))  # [B, T]
    assert np.all((peaks >= 0.9 * 168.0) & (peaks <= 1.1 * 168.0))
    assert len({tuple(np.argwhere(c[0, ..., 0] > 0)[0]) for c in centred}) > 1  # shifted
    # Shifting the whole frame instead moves the wall off its mean.
    whole = np.asarray(augment(jax.random.key(0), obs)) - background
    assert np.abs(whole[..., :10, :, :]).mean() > 20
