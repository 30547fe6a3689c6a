"""The agent really learns: after a short CPU run its greedy search policy beats a random
policy measured on the same environment in the same test."""

import dataclasses

import numpy as np

from agent import config as config_lib
from agent.envs import make_env
from agent.train import train

# Budgets: a few minutes of 2-core CPU each. Catch is learnt with EfficientZero's pUCT
# search at 8 simulations (greedy returns -2.6 and -6.6 for seeds 0 and 1 at 1200
# updates of the smoke-sized model); with 4 simulations, or Gumbel search at 4 or 8, this
# budget is not enough (-8.1 to -9.8), so the test pins the search. CartPole is learnt
# sooner (486 with one update per call, 500 with five, at 1250 updates), with the smoke
# preset's Gumbel search. The catch margin is about two standard errors of a 32-episode
# mean: at least half again as many balls as random.
LEARN_CATCH_STEPS, CATCH_MARGIN = 4_000, 1.0
LEARN_CARTPOLE_STEPS, CARTPOLE_FACTOR = 2_500, 2.0


def _random_return(name: str, *, episodes: int, seed: int, **env_kwargs) -> float:
    env = make_env(name, num_envs=4, seed=seed, mode="eval", **env_kwargs)
    rng = np.random.default_rng(seed)
    env.reset()
    returns = []
    while len(returns) < episodes:
        step = env.step(rng.integers(env.num_actions, size=env.num_envs))
        returns += step.episode_return[step.terminated | step.truncated].tolist()
    env.close()
    return float(np.mean(returns[:episodes]))


def _smoke(logdir, *, env: str, env_steps: int, eval_episodes: int = 16,
           **train_overrides) -> config_lib.Config:
    cfg = config_lib.smoke()
    return dataclasses.replace(
        cfg, logdir=str(logdir),
        env=dataclasses.replace(cfg.env, name=env),
        train=dataclasses.replace(cfg.train, env_steps=env_steps, **train_overrides),
        # Only the final evaluation: periodic ones of long CartPole episodes cost minutes.
        log=dataclasses.replace(cfg.log, progress=False, eval_interval=0,
                                eval_episodes=eval_episodes, eval_envs=8),
    )


def test_learns_catch_from_pixels(tmp_path):
    cfg = _smoke(tmp_path, env="catch", env_steps=LEARN_CATCH_STEPS, eval_episodes=32,
                 batch_size=32, replay_ratio=0.3)
    cfg = dataclasses.replace(cfg, search=config_lib.SearchConfig(kind="muzero",
                                                                  num_simulations=8))
    result = train(cfg)
    random = _random_return("catch", episodes=64, seed=1, frame_stack=cfg.env.frame_stack)
    # Random play catches 1 ball in 10 (return -8).
    assert result["mean_return"] > random + CATCH_MARGIN, (result["mean_return"], random)


def test_learns_cartpole_from_vectors(tmp_path):
    # Five updates per call (batches reanalysed together): the catch test covers one.
    cfg = _smoke(tmp_path, env="CartPole-v1", env_steps=LEARN_CARTPOLE_STEPS, batch_size=32,
                 replay_ratio=0.5, updates_per_call=5)
    result = train(cfg)
    random = _random_return("CartPole-v1", episodes=64, seed=1)
    assert result["mean_return"] > CARTPOLE_FACTOR * random, (result["mean_return"], random)
