import dataclasses
import subprocess
import sys

import pytest

from agent import config as config_lib
from agent.cli import main, parse_train_args


def test_presets_validate():
    for name in config_lib.PRESETS:
        cfg = config_lib.preset(name)
        config_lib.validate(cfg)
        assert cfg.preset == name


def test_shortcuts_and_overrides_reach_the_config():
    cfg = parse_train_args(
        [
            "--env",
            "pong",
            "--preset",
            "smoke",
            "--env-steps=500",
            "--seed",
            "3",
            "--logdir",
            "/tmp/x",
            "--search.kind",
            "muzero",
            "--model.channels",
            "12",
        ]
    )
    assert cfg.env.name == "pong" and cfg.train.env_steps == 500 and cfg.seed == 3
    assert cfg.logdir == "/tmp/x" and cfg.search.kind == "muzero" and cfg.model.channels == 12
    assert cfg.preset == "smoke"
    # Untouched fields keep the preset's values.
    assert cfg.train.batch_size == config_lib.smoke().train.batch_size


def test_rewards_are_clipped_by_default_only_where_the_protocol_clips():
    """Atari-100k clips learning rewards to [-1, 1]; another env's rewards are its own
    (MountainCarContinuous-v0's +100 flag must outweigh the fuel), unless a flag says."""
    for name in config_lib.PRESETS:
        train = config_lib.preset(name).train
        assert train.clips_rewards("atari")
        assert not any(train.clips_rewards(kind) for kind in ("gym", "custom", "builtin"))
    on = parse_train_args(["--env", "CartPole-v1", "--train.clip-rewards", "True"]).train
    off = parse_train_args(["--env", "pong", "--train.clip-rewards", "False"]).train
    assert on.clips_rewards("gym") and not off.clips_rewards("atari")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--env-steps", "-5"], "--train.env-steps must be > 0"),
        (["--preset", "smok"], "did you mean 'smoke'"),
        (["--preset", "smoke", "--train.batch-size", "5000"], "larger than --replay.capacity"),
        (["--search.num-simulations", "0"], "--search.num-simulations must be > 0"),
        (["--preset", "smoke", "--train.updates-per-call", "3"],
         "--train.target-update-interval (20) must be a multiple of --train.updates-per-call"),
        (["--preset", "smoke", "--train.updates-per-call", "0"],
         "--train.updates-per-call must be > 0"),
        (["--preset", "smoke", "--train.start-steps", "10"],
         "--train.start-steps must be >= (unroll-steps + td-steps + 1) x num-envs = 22"),
    ],
)
def test_bad_values_fail_with_one_line(args, fragment, capsys):
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1


def test_config_round_trips_through_json_dict():
    cfg = dataclasses.replace(config_lib.atari100k(), seed=7)
    assert config_lib.from_dict(config_lib.to_dict(cfg)) == cfg
    with pytest.raises(config_lib.ConfigError, match="unknown field"):
        config_lib.from_dict({**config_lib.to_dict(cfg), "bogus": 1})


def test_train_help_lists_presets_and_overrides():
    out = subprocess.run(
        [sys.executable, "-m", "agent.cli", "train", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for text in (
        "quickstart",
        "smoke",
        "atari100k",
        "--train.batch-size",
        "--search.kind",
        "--env.name",
    ):
        assert text in out
