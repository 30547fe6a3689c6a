"""Every knob of a run, as frozen dataclasses, and the named presets.

`Config` is the whole run; its groups mirror the data path (env -> model -> search ->
replay -> optim -> train) plus logging. Presets are plain functions returning a
`Config`; the CLI starts from one and applies `--group.field` overrides on top, so
there is exactly one layer of configuration.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Literal

from world_model import LossConfig, ModelConfig


class ConfigError(ValueError):
    """A bad configuration value; the message is one line naming the fix."""


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    name: str = "catch"
    """Environment: an Atari game (`pong`, `ALE/Pong-v5`), a gymnasium id (`CartPole-v1`),
    `module:Class` / `module:factory` / `path/file.py:Class`, or the built-in `catch`."""
    num_envs: int = 1
    """Environments stepped in parallel; acting searches them as one batch."""
    image_size: int = 96
    """Square size Atari frames (and larger custom images) are resized to."""
    grayscale: bool = False
    """Atari only: one luminance channel a frame instead of RGB (ALE's own conversion)."""
    frame_stack: int = 4
    """Frames stacked into one observation (image envs; vector envs use 1)."""
    noop_max: int = 30
    """Up to this many random no-ops at reset (Atari)."""
    max_episode_frames: int = 108_000
    """Episode cap in emulator frames (Atari; 108k = 30 minutes of play)."""
    action_repeat: int = 1
    """Gymnasium and custom envs: each agent action is repeated this many env steps, their
    rewards summed (DMC's protocol repeats 2). Atari keeps the protocol's frame skip 4."""

    def keywords(self) -> dict:
        """The `agent.envs.make_env` keywords these settings give (all but the name,
        num_envs, seed and mode)."""
        return dict(image_size=self.image_size, grayscale=self.grayscale,
                    frame_stack=self.frame_stack,
                    noop_max=self.noop_max, max_episode_frames=self.max_episode_frames,
                    action_repeat=self.action_repeat)


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    kind: Literal["muzero", "gumbel", "auto"] = "muzero"
    """`muzero`: pUCT with Dirichlet noise (EfficientZero); `gumbel`: Gumbel MuZero;
    `auto`: muzero for Discrete actions, gumbel for Box ones. Over a Box node's arms pUCT's
    target is the visit counts, which at few simulations spread evenly over them and so
    keep the policy where it was; Gumbel's improved policy weighs each arm by its value
    (docs/results/continuous_cpu.md)."""
    num_simulations: int = 50
    """Simulations per search, for acting and for reanalysis."""
    qtransform: Literal["minmax", "default"] = "minmax"
    """The range Q-values are normalised by: `minmax` the whole tree's (EfficientZero, and
    EfficientZero-V2 for gumbel), `default` the node's own (mctx)."""
    dirichlet_alpha: float = 0.3
    dirichlet_fraction: float = 0.25
    pb_c_init: float = 1.25
    pb_c_base: float = 19652.0
    max_num_considered_actions: int = 16
    """gumbel only: actions sampled at the root for sequential halving."""
    gumbel_scale: float = 1.0
    """gumbel only: scale of the root Gumbel noise while acting (0 at evaluation)."""
    min_q_range: float = 0.01
    """Smallest range (in return units) Q-values are divided by (EfficientZero's 0.01;
    mctx's 1e-8 lets any spread of noise count in full)."""
    arms: int = 8
    """Box actions only: the arms of a search node, actions it samples from its policy;
    they are the node's choices (Sampled MuZero, EfficientZero-V2)."""
    wide_arms: int = 2
    """Box actions only: how many of the root's arms come from the policy with twice its
    std, to try actions the policy would not (exploration)."""


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    capacity: int = 100_000
    """Transitions kept (all envs together); the oldest are overwritten."""
    priority_alpha: float = 0.6
    """Prioritisation exponent (0 = uniform sampling)."""
    priority_beta: float = 0.4
    """Importance-sampling exponent at the start, annealed linearly to 1."""


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    optimizer: Literal["sgd", "adamw"] = "sgd"
    learning_rate: float = 0.2
    momentum: float = 0.9
    """SGD momentum (ignored by AdamW)."""
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.01
    """Fraction of all updates spent warming the learning rate up linearly."""
    lr_decay_fraction: float = 1.0
    """The learning rate drops by `lr_decay_factor` after this fraction of the updates."""
    lr_decay_factor: float = 0.1
    max_grad_norm: float = 5.0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    env_steps: int = 100_000
    """Total agent steps over all envs (Atari-100k: 100k agent steps = 400k frames)."""
    start_steps: int = 2_000
    """Env steps collected before the first update."""
    replay_ratio: float = 1.0
    """Updates per env step: the run makes `replay_ratio * env_steps` updates, spread
    evenly from `start_steps` to the end."""
    batch_size: int = 256
    unroll_steps: int = 5
    td_steps: int = 5
    discount: float = 0.997**4
    """Discount per agent step (EfficientZero: 0.997 per frame, frame skip 4)."""
    clip_rewards: bool | None = None
    """Clip learning targets' rewards to [-1, 1] (scores stay raw). None: only for Atari
    games, whose protocol clips; any other env's rewards are learnt as it gives them."""
    target_update_interval: int = 200
    """Updates between target-network refreshes."""
    updates_per_call: int = 1
    """Updates in one jitted call: their batches are sampled together (priorities as at
    the call's start) and reanalysed in one search over all their roots, which takes 1/M
    of the sequential search steps; then the gradient steps run in turn."""
    devices: int = 0
    """Local devices each update's batch is split over (data parallel; 0: all of them).
    Parameters and the replay are replicated on each (the replay so that every device
    gathers its share of the batch's windows locally); acting runs on them all alike."""
    reanalyze_fraction: float = 0.99
    """Fraction of the batch whose policy targets are recomputed by search."""
    value_target: Literal["nstep", "search", "greedy"] = "nstep"
    """`nstep`: n-step return bootstrapped from the target network's value; `search`:
    bootstrapped from the reanalysis search's root value instead (MuZero Reanalyse; the
    search then also runs on the bootstrap steps); `greedy`: from the Q-value of the action
    that search would take greedily (the most visited, ties to the higher Q), not its
    average over the actions it explored."""
    offpolicy_correction: bool = True
    """Shorten the TD horizon for old data (EfficientZero): minus one step per
    `0.3 * env_steps` transitions of age, at least 1."""
    augment: bool = True
    """Random shift (pad 4) and intensity on training images (DrQ / SPR); with
    `model.center_frames`, of each image's difference from the frame mean."""
    temperatures: tuple[float, ...] = (1.0, 0.5, 0.25)
    """Acting temperature over equal thirds of training (muzero search)."""

    def clips_rewards(self, env_kind: str) -> bool:
        """`clip_rewards` for an env of this kind (EnvSpec.kind), None resolved."""
        return env_kind == "atari" if self.clip_rewards is None else self.clip_rewards


@dataclasses.dataclass(frozen=True)
class LogConfig:
    log_interval: int = 1_000
    """Env steps between lines of metrics.jsonl / TensorBoard."""
    eval_interval: int = 0
    """Env steps between periodic evaluations (0: only the final one)."""
    eval_episodes: int = 100
    """Episodes of the final evaluation (periodic ones use a tenth, at least 1)."""
    eval_envs: int = 8
    """Envs stepped in parallel during evaluation."""
    checkpoint_interval: int = 5_000
    """Updates between checkpoints (one is also written at the end)."""
    progress: bool = True
    """Show a progress bar."""


@dataclasses.dataclass(frozen=True)
class Config:
    preset: str = "quickstart"
    """The preset this config started from (for the record; set it with --preset)."""
    seed: int = 0
    """Seed of the model's initialisation, the search and the envs."""
    logdir: str = ""
    """Run directory; rerunning with the same logdir resumes. Default runs/ENV/PRESET/seedS."""
    env: EnvConfig = EnvConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    search: SearchConfig = SearchConfig()
    replay: ReplayConfig = ReplayConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    log: LogConfig = LogConfig()

    @property
    def run_dir(self) -> str:
        safe_env = self.env.name.replace("/", "_").replace(":", "_")
        return self.logdir or f"runs/{safe_env}/{self.preset}/seed{self.seed}"

    @property
    def total_updates(self) -> int:
        return int(self.train.replay_ratio * self.train.env_steps)


def atari100k() -> Config:
    """EfficientZero's Atari-100k reference configuration (pUCT, 50 simulations)."""
    return Config(
        preset="atari100k",
        env=EnvConfig(name="pong", num_envs=8),
        log=LogConfig(eval_interval=20_000, eval_episodes=100, checkpoint_interval=5_000),
    )


def atari100k_cpu() -> Config:
    """The Atari-100k protocol on a 2-core CPU: about 1.3 h a game; no game learnt over
    seeds yet (Boxing 3.34 [-11.03, 18.75] over 3 seeds; docs/results/atari100k_cpu.md).

    The benchmark is EfficientZero's (the env wrapper, 100k agent steps, raw scores in
    evaluation); the agent is the quickstart's, sized for CPU-seconds. Each value below was
    timed with `scripts/bench_train.py --preset atari100k-cpu -- FLAGS`:
    - 64 x 64 grayscale frames, stack 4 (a seventh of 96 x 96 RGB's values).
    - The frames enter the MLP as 16 keypoints (`model.keypoints`), as small images do in
      the quickstart: 3.3 updates/s at batch 64 against 0.9 with the conv stem (32
      channels, 8 x 8 latent) and 1.6 with that stem on 48 x 48 frames.
    - Less the mean frame of the start steps' play (`model.center_frames`): uncentred, the
      shared background hides Pong's ball and paddles, the latents collapse to one point
      and the model learns neither rewards nor values (held-out correlations -0.02 after
      3,000 updates on random play, `scripts/probe_world_model.py`; centred: 0.52, 0.33).
    - Gumbel search, 8 simulations over at most 8 root actions: pUCT's visit counts at 8
      simulations say little over 18 actions; Gumbel's improved policy needs no visits on
      every action. Q-values are normalised by a range of at least 1 (a clipped reward):
      with EfficientZero's 0.01, or 0.1, an early model's Q noise across actions (0.04 on
      Boxing) filled the whole scale and the policy collapsed onto one action (entropy
      below 1 nat by 14k-16k env steps); with 1 it held for 20k env steps, then narrowed
      too. Uncentred, Boxing was not learnt at any of the three (greedy -30 and -59 at 50k).
    - One update per 4 env steps (25k updates) at batch 32 (5.6 updates/s), EfficientZero's
      5-step value targets, the target network refreshed every 100 updates, DrQ's shifts
      (of a centring model's difference from the mean frame).
    - 32 final evaluation episodes (EfficientZero's count), 16 at a time.
    """
    base = quickstart()
    return dataclasses.replace(
        base,
        preset="atari100k-cpu",
        env=EnvConfig(name="pong", num_envs=4, image_size=64, grayscale=True),
        model=dataclasses.replace(base.model, max_flat_image=64 * 64 * 4, vector_hidden=256,
                                  lstm_hidden=128, proj_hidden=256, proj_out=256,
                                  pred_hidden=128, center_frames=True),
        search=SearchConfig(kind="gumbel", num_simulations=8, max_num_considered_actions=8,
                            min_q_range=1.0),
        replay=ReplayConfig(capacity=100_000),
        train=dataclasses.replace(
            base.train, env_steps=100_000, start_steps=2_000, batch_size=32, replay_ratio=0.25,
            td_steps=5, value_target="nstep", target_update_interval=100, augment=True,
        ),
        log=LogConfig(log_interval=2_000, eval_interval=25_000, eval_episodes=32, eval_envs=16,
                      checkpoint_interval=2_500),
    )


def smoke() -> Config:
    """The whole path at toy size: runs end to end on 2 CPU cores in seconds."""
    return Config(
        preset="smoke",
        env=EnvConfig(name="catch", num_envs=2, frame_stack=1),
        model=_tiny_model(),
        search=SearchConfig(kind="gumbel", num_simulations=4, max_num_considered_actions=4),
        replay=ReplayConfig(capacity=2_000),
        optim=OptimConfig(optimizer="adamw", learning_rate=3e-3, weight_decay=0.0),
        train=TrainConfig(
            env_steps=400, start_steps=100, batch_size=16, replay_ratio=0.25,
            target_update_interval=20, augment=False,
        ),
        log=LogConfig(log_interval=100, eval_interval=200, eval_episodes=4, eval_envs=4,
                      checkpoint_interval=50),
    )


def quickstart() -> Config:
    """The default of `dreamzero train`: learns the built-in catch game on a laptop CPU,
    and the preset `dreamzero train --env X` gives any other env. Each value's
    measurement is in docs/notes/ladder_2026-12.md (the ladder over seeds 0-4 or 0-9):

    - images of at most `model.max_flat_image` values (catch, MinAtar, small grids) enter
      an MLP of width 64 as 16 keypoints (flattened pixels: the grid at the goal in 11%
      of episodes against 77-100%); larger images take the conv path;
    - value bins 1 wide in h's units (0.1-wide bins left Acrobot at -500), reward
      (value-prefix) bins 0.1 wide (catch solved on 6 of seeds 0-9 against 4);
    - pUCT x 8 for Discrete actions with the root noise's alpha 1 (catch mean 7.24
      against 5.37 at 0.3), Gumbel x 8 for Box ones;
    - one update per env step at batch 32 (a quarter of that left catch near random);
    - value targets of one real reward, then the reanalysis search's value
      (`value_target="search"`, `td_steps=1`), the target network refreshed every 50
      updates: the seeds that failed catch with n-step targets had learnt the value of
      the replay's near-random acting;
    - 64 final evaluation episodes (over 16 a catch seed's mean has a standard error of
      about 0.5)."""
    return Config(
        preset="quickstart",
        env=EnvConfig(name="catch", num_envs=4, frame_stack=1),
        model=ModelConfig(
            channels=8, num_blocks=1, head_channels=8, head_hidden=32,
            keypoints=16, vector_hidden=64, lstm_hidden=64, support_size=20,
            reward_support_size=25, reward_bin_width=0.1, proj_hidden=128, proj_out=128,
            pred_hidden=64,
        ),
        # pUCT for Discrete actions: Gumbel x 4 and x 8 solve catch as well (5/5 seeds), and
        # CartPole-v1 on 6 of seeds 0-9 each against pUCT's 7 (docs/results/ladder_cpu.md);
        # Gumbel for Box actions.
        search=SearchConfig(kind="auto", num_simulations=8, dirichlet_alpha=1.0),
        replay=ReplayConfig(capacity=20_000),
        optim=OptimConfig(optimizer="adamw", learning_rate=2e-3, weight_decay=0.0),
        train=TrainConfig(
            env_steps=8_000, start_steps=500, batch_size=32, replay_ratio=1.0,
            td_steps=1, target_update_interval=50, augment=False, value_target="search",
        ),
        # 64 final episodes: over 16, a catch seed's mean return has a standard error of
        # about 0.5, as wide as the gap between solved (+8) and nearly solved.
        log=LogConfig(
            log_interval=500, eval_interval=2_000, eval_episodes=64, checkpoint_interval=2_000
        ),
    )


def dmc() -> Config:
    """DeepMind Control from proprioceptive observations (EfficientZero-V2's protocol).

    Each action is repeated 2 env steps; 100k env steps are 50k agent steps. Needs the
    `dmc` extra (pip install -e '.[dmc]'). The agent is the quickstart's (which learns
    Pendulum-v1, docs/results/continuous_cpu.md), with a discount of 0.997 per env step
    (EfficientZero-V2's)."""
    base = quickstart()
    return dataclasses.replace(
        base,
        preset="dmc",
        env=EnvConfig(name="dm_control/cartpole-swingup-v0", num_envs=4, frame_stack=1,
                      action_repeat=2),
        replay=ReplayConfig(capacity=50_000),
        train=dataclasses.replace(base.train, env_steps=50_000, start_steps=2_000,
                                  discount=0.997**2),
        log=LogConfig(log_interval=1_000, eval_interval=5_000, eval_episodes=10,
                      checkpoint_interval=5_000),
    )


def _tiny_model() -> ModelConfig:
    return ModelConfig(
        channels=8, num_blocks=1, head_channels=4, head_hidden=16,
        vector_hidden=32, lstm_hidden=16, support_size=10, reward_support_size=5,
        proj_hidden=32, proj_out=32, pred_hidden=16,
    )


PRESETS = {"quickstart": quickstart, "smoke": smoke, "atari100k": atari100k,
           "atari100k-cpu": atari100k_cpu, "dmc": dmc}


def preset(name: str) -> Config:
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"unknown preset '{name}': {hint}choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()


def validate(cfg: Config) -> None:
    """Checks values that would otherwise fail late or silently; one line each."""
    t, r, o, s, e, lg = cfg.train, cfg.replay, cfg.optim, cfg.search, cfg.env, cfg.log
    first_batch = (t.unroll_steps + t.td_steps + 1) * e.num_envs
    checks = [
        (t.env_steps > 0, f"--train.env-steps must be > 0 (got {t.env_steps})"),
        (0 <= t.start_steps < t.env_steps,
         f"--train.start-steps must be in [0, env-steps) (got {t.start_steps} of {t.env_steps})"),
        (t.start_steps >= first_batch,
         f"--train.start-steps must be >= (unroll-steps + td-steps + 1) x num-envs = "
         f"{first_batch}, so that the first update has windows to sample (got {t.start_steps})"),
        (t.replay_ratio > 0, f"--train.replay-ratio must be > 0 (got {t.replay_ratio})"),
        (t.batch_size > 0, f"--train.batch-size must be > 0 (got {t.batch_size})"),
        (t.unroll_steps > 0, f"--train.unroll-steps must be > 0 (got {t.unroll_steps})"),
        (t.td_steps > 0, f"--train.td-steps must be > 0 (got {t.td_steps})"),
        (0 < t.discount <= 1, f"--train.discount must be in (0, 1] (got {t.discount})"),
        (0 <= t.reanalyze_fraction <= 1,
         f"--train.reanalyze-fraction must be in [0, 1] (got {t.reanalyze_fraction})"),
        (len(t.temperatures) > 0 and all(x >= 0 for x in t.temperatures),
         "--train.temperatures must be one or more values >= 0"),
        (t.target_update_interval > 0, "--train.target-update-interval must be > 0"),
        (t.devices >= 0, f"--train.devices must be >= 0, 0 for all (got {t.devices})"),
        (t.updates_per_call > 0,
         f"--train.updates-per-call must be > 0 (got {t.updates_per_call})"),
        (t.target_update_interval % max(1, t.updates_per_call) == 0,
         f"--train.target-update-interval ({t.target_update_interval}) must be a multiple of "
         f"--train.updates-per-call ({t.updates_per_call})"),
        (cfg.total_updates % max(1, t.updates_per_call) == 0,
         f"replay-ratio x env-steps = {cfg.total_updates} updates must be a multiple of "
         f"--train.updates-per-call ({t.updates_per_call})"),
        (e.num_envs > 0, f"--env.num-envs must be > 0 (got {e.num_envs})"),
        (e.frame_stack > 0, f"--env.frame-stack must be > 0 (got {e.frame_stack})"),
        (e.image_size >= 8, f"--env.image-size must be >= 8 (got {e.image_size})"),
        (r.capacity >= t.batch_size,
         f"--train.batch-size {t.batch_size} is larger than --replay.capacity {r.capacity}: "
         "lower the batch or raise the capacity"),
        (r.capacity // e.num_envs > t.unroll_steps + t.td_steps + 1,
         "--replay.capacity is too small for the unroll and TD window per env: raise it"),
        (r.priority_alpha >= 0, "--replay.priority-alpha must be >= 0"),
        (0 <= r.priority_beta <= 1, "--replay.priority-beta must be in [0, 1]"),
        (o.learning_rate > 0, f"--optim.learning-rate must be > 0 (got {o.learning_rate})"),
        (o.max_grad_norm > 0, "--optim.max-grad-norm must be > 0"),
        (0 <= o.warmup_fraction < 1, "--optim.warmup-fraction must be in [0, 1)"),
        (s.num_simulations > 0, f"--search.num-simulations must be > 0 (got {s.num_simulations})"),
        (s.kind == "muzero" or s.max_num_considered_actions > 0,
         "--search.max-num-considered-actions must be > 0"),
        (s.arms > 1, f"--search.arms must be > 1 (got {s.arms})"),
        (0 <= s.wide_arms < s.arms, f"--search.wide-arms must be in [0, arms) (got {s.wide_arms})"),
        (lg.log_interval > 0, "--log.log-interval must be > 0"),
        (lg.eval_interval >= 0, "--log.eval-interval must be >= 0 (0 disables it)"),
        (lg.eval_episodes > 0, "--log.eval-episodes must be > 0"),
        (lg.eval_envs > 0, "--log.eval-envs must be > 0"),
        (lg.checkpoint_interval > 0, "--log.checkpoint-interval must be > 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(data: dict) -> Config:
    """Inverse of `to_dict` (for config.json); unknown keys are an error."""
    groups = {f.name: f.type for f in dataclasses.fields(Config)}
    kwargs = {}
    for key, value in data.items():
        if key not in groups:
            raise ConfigError(f"config.json has an unknown field '{key}'")
        if isinstance(value, dict):
            cls = type(getattr(Config(), key))
            fields = {f.name for f in dataclasses.fields(cls)}
            unknown = set(value) - fields
            if unknown:
                raise ConfigError(f"config.json has unknown fields {sorted(unknown)} in '{key}'")
            value = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
        kwargs[key] = value
    return Config(**kwargs)
