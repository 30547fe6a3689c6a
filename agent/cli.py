"""The `dreamzero` command: train, evaluate, report, dreams, check-env."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

import tyro

from agent import config as config_lib

_USAGE = """\
usage: dreamzero COMMAND [ARGS]   (dreamzero COMMAND --help for details)

dreamzero learns to act from few real steps by planning and rehearsing in a learned
latent world model (EfficientZero-style, JAX + mctx).

commands:
  train       train an agent; rerun the same command to resume (default preset: quickstart)
  evaluate    evaluate a run's checkpoint (greedy search policy), write DIR/eval.json
  report      sample-efficiency report over runs: HNS, IQM with CIs, curves
  dreams      how far ahead the model's dreams can be trusted, per unroll depth
  check-env   validate an environment and show its spec and a random rollout
"""

# Shortcuts for the flags everyone types; they are rewritten to the full field names.
_TRAIN_SHORTCUTS = {"--env": "--env.name", "--env-steps": "--train.env-steps"}


def _train_description() -> str:
    presets = "\n".join(
        f"  {name:<13} {fn.__doc__.splitlines()[0]}" for name, fn in config_lib.PRESETS.items()
    )
    return (
        "Train a dreamzero agent. Rerunning the same command with the same --logdir resumes "
        "exactly where the last checkpoint left off.\n\n"
        "  dreamzero train --env ENV --preset NAME --env-steps N --seed S --logdir DIR\n\n"
        f"--preset NAME picks the starting config (default quickstart):\n{presets}\n\n"
        "--env is short for --env.name and --env-steps for --train.env-steps; every field "
        "below overrides the preset.\n\n"
        "Exit status: 0 finished; 2 refused or stopped with a one-line error naming the fix; "
        "1 an unexpected error (its traceback, then a line with the last checkpoint); 130 "
        "Ctrl-C and 143 SIGTERM (preemption), both after checkpointing the step reached (a "
        "second Ctrl-C stops at once). After 1, 130 or 143, rerunning the same command "
        "resumes."
    )


def _split_preset(args: list[str]) -> tuple[str, list[str]]:
    """Pulls `--preset NAME` out of argv, since it selects the defaults the rest override."""
    name, rest, i = "quickstart", [], 0
    while i < len(args):
        arg = args[i]
        if arg == "--preset" and i + 1 < len(args):
            name, i = args[i + 1], i + 2
            continue
        if arg.startswith("--preset="):
            name = arg.split("=", 1)[1]
        else:
            flag, eq, value = arg.partition("=")
            rest.append(_TRAIN_SHORTCUTS.get(flag, flag) + eq + value)
        i += 1
    return name, rest


def parse_train_args(args: list[str]) -> config_lib.Config:
    """argv (after `train`) -> validated Config; raises ConfigError on bad values."""
    name, rest = _split_preset(args)
    if name not in config_lib.PRESETS and any(a in ("-h", "--help") for a in rest):
        name = "quickstart"
    base = config_lib.preset(name)
    cfg = tyro.cli(
        config_lib.Config,
        default=base,
        args=rest,
        prog="dreamzero train",
        description=_train_description(),
        config=(tyro.conf.FlagConversionOff,),
    )
    cfg = dataclasses.replace(cfg, preset=name)
    config_lib.validate(cfg)
    return cfg


def _one_line_errors() -> tuple[type[Exception], ...]:
    """Errors whose message is one line naming the fix: printed without a traceback."""
    from agent.checkpoint import CheckpointError, RunDirError
    from agent.envs import EnvError

    return config_lib.ConfigError, EnvError, RunDirError, CheckpointError, FileNotFoundError


def _train(args: list[str]) -> int:
    cfg = parse_train_args(args)
    from agent import train

    # SIGTERM (a scheduler's preemption) and Ctrl-C: the loop checkpoints the step it
    # reached, then stops. An exception raised mid-step instead could land inside a
    # checkpoint write and leave orbax's event loops half torn down.
    stop, stopped_by = threading.Event(), []

    def request_stop(signum, frame):
        stopped_by.append(signum)
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: at once

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        train.train(cfg, stop=stop)
    except train.Preempted as preempted:
        if stopped_by[0] == signal.SIGINT:
            print(f"dreamzero train: interrupted; rerun the same command to resume "
                  f"{cfg.run_dir} from its checkpoint at env step {preempted.env_steps}",
                  file=sys.stderr)
            return 130
        print(f"dreamzero train: stopped by SIGTERM at env step {preempted.env_steps}, "
              f"checkpointed in {cfg.run_dir}; rerun the same command to resume",
              file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        # The loop's `finally` has waited for the checkpoint being written: nothing to undo.
        print(f"dreamzero train: interrupted; rerun the same command to resume {cfg.run_dir} "
              "from its last checkpoint", file=sys.stderr)
        return 130
    except train.NonFiniteLossError as error:
        print(f"dreamzero train: error: {error}", file=sys.stderr)
        return 2
    except _one_line_errors():
        raise
    except Exception:
        # Most likely in the user's env: its traceback leads; then where the run stands.
        traceback.print_exc()
        print(f"dreamzero train: {_run_state(cfg.run_dir)}; fix the error above and rerun "
              "the same command to resume", file=sys.stderr)
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def _run_state(run_dir: str) -> str:
    from agent.checkpoint import Checkpointer

    checkpointer = Checkpointer(Path(run_dir), read_only=True)
    step = checkpointer.latest_step()
    checkpointer.close()
    if step is None:
        return f"{run_dir} has no checkpoint yet"
    return f"the last checkpoint is at env step {step} in {checkpointer.directory}"


def evaluate_command(
    logdir: Path,
    /,
    episodes: int | None = None,
    video: bool = False,
    seed: int = 1_000,
    sampled: bool = False,
) -> None:
    """Evaluate the latest checkpoint of a run with the greedy search policy.

    Args:
        logdir: The run directory (as given to `dreamzero train --logdir`).
        episodes: Episodes to play (default: the run's --log.eval-episodes).
        video: Also write DIR/eval.gif, an animated GIF of the first episode (image envs only).
        seed: Seed of the evaluation envs (distinct from training seeds).
        sampled: Play the exploring policy that acts at the end of training instead (search
            noise, the last acting temperature) and write DIR/eval_sampled.json, leaving
            eval.json alone.
    """
    from agent import evaluate

    evaluate.evaluate_run(logdir, episodes=episodes, video=video, seed=seed, sampled=sampled)


def report_command(runs: list[Path], out: Path = Path("report")) -> None:
    """Sample-efficiency report: per-game scores vs anchors, HNS mean/median/IQM with
    95% stratified-bootstrap CIs (rliable), performance profiles and learning curves.

    Args:
        runs: Run dirs, or dirs holding runs (searched recursively).
        out: Where report.md, the tables and the plots go.
    """
    from agent import report

    path = report.build_report(list(runs), out)
    print(f"wrote {path}")


def dreams_command(
    logdir: Path,
    /,
    horizon: int = 10,
    episodes: int = 4,
    seed: int = 2_000,
) -> None:
    """Dream fidelity: unroll the model along real held-out trajectories and report, per
    depth k, the reward, value, policy and latent errors against what really happened.

    Args:
        logdir: The run directory.
        horizon: Deepest unroll k (beyond the training unroll shows how far dreams hold).
        episodes: Held-out evaluation episodes to collect.
        seed: Seed of the held-out episodes.
    """
    from agent import dreams

    dreams.dreams_run(logdir, horizon=horizon, episodes=episodes, seed=seed)


def check_env_command(
    env: str,
    /,
    steps: int = 1_000,
    seed: int = 0,
    image_size: int = 96,
    frame_stack: int = 4,
) -> None:
    """Validate an environment, print its spec (and the Atari-100k protocol settings for
    Atari games) and run a random policy to show its speed.

    Args:
        env: Atari game (`pong`), gymnasium id (`CartPole-v1`), `module:Class`,
            `path/file.py:Class`, or `catch`.
        steps: Random-policy steps to run.
        seed: Seed of the rollout.
        image_size: Size custom images are resized to when larger.
        frame_stack: Frames per observation (image envs).
    """
    from agent.envs import check_env

    check_env(env, steps=steps, seed=seed, image_size=image_size, frame_stack=frame_stack)


_COMMANDS = {
    "evaluate": evaluate_command,
    "report": report_command,
    "dreams": dreams_command,
    "check-env": check_env_command,
}


def enable_compilation_cache() -> None:
    """Keeps compiled programs on disk: a rerun (a resume, an evaluation) starts in seconds
    instead of recompiling search and update. DREAMZERO_COMPILATION_CACHE='' turns it off."""
    import jax

    path = os.environ.get("DREAMZERO_COMPILATION_CACHE",
                          str(Path.home() / ".cache" / "dreamzero" / "xla"))
    if path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    enable_compilation_cache()
    if not argv or argv[0] in ("-h", "--help"):
        print(_USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    from agent.checkpoint import quiet_orbax

    quiet_orbax()
    try:
        if command == "train":
            return _train(rest)
        if command in _COMMANDS:
            tyro.cli(_COMMANDS[command], args=rest, prog=f"dreamzero {command}")
            return 0
    except _one_line_errors() as error:
        print(f"dreamzero {command}: error: {error}", file=sys.stderr)
        return 2
    print(f"dreamzero: unknown command '{command}'\n\n{_USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
