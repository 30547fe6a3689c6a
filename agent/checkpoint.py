"""Checkpoints: everything needed to resume exactly, written atomically by orbax.

A checkpoint holds the training state (params, target params, optimiser state, RNG),
the whole replay (frames, priorities, segment boundaries) and the counters. Orbax
writes each step into a temporary directory and renames it when complete, so a kill
at any moment leaves the previous checkpoint intact. Saves are asynchronous: training
goes on while a checkpoint is written in the background.

Restoring takes the newest checkpoint that reads back; a newer one that does not
(truncated or corrupt files) is moved aside, never deleted. A failed write (a full
disk) is one CheckpointError and leaves the previous checkpoint as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from agent import config as config_lib

# Fields that may change between a run and its resumption: extending a run, or how
# often it logs, must not refuse the checkpoint.
_RESUMABLE_CHANGES = {("train", "env_steps"), ("preset",), ("logdir",)}


class CheckpointError(RuntimeError):
    """No readable checkpoint, or one that could not be written; the message is one line
    naming the directory and the fix."""


class RunDirError(ValueError):
    """A directory that is not a usable run (a foreign or malformed config.json, nothing
    to report yet); the message is one line naming the fix."""


def quiet_orbax() -> None:
    """Silences what orbax leaves behind when a checkpoint fails; the Checkpointer reports
    it once, in one line. That is its log records (a failed background write is logged
    many times over, with tracebacks, from several threads, and every read-only reader is
    warned) and, after a restore that fails part-way, an "Event loop is closed" error for
    each read still in flight (hundreds)."""
    for name in ("absl", "asyncio"):
        logging.getLogger(name).addFilter(_not_orbax)
    if not getattr(sys.unraisablehook, "drops_closed_loop_errors", False):
        sys.unraisablehook = _dropping_closed_loop_errors(sys.unraisablehook)


def _not_orbax(record: logging.LogRecord) -> bool:
    return "/orbax/" not in record.pathname and "/orbax/" not in record.getMessage()


def _dropping_closed_loop_errors(hook):
    def unraisable(args) -> None:
        closed = isinstance(args.exc_value, RuntimeError) and (
            str(args.exc_value) == "Event loop is closed")
        if not closed:
            hook(args)

    unraisable.drops_closed_loop_errors = True
    return unraisable


def config_mismatch(saved: dict, current: config_lib.Config) -> list[str]:
    """Names of the fields that differ between a saved config.json and `current`."""
    now = config_lib.to_dict(current)
    differences = []
    for group, value in now.items():
        if group == "log" or (group,) in _RESUMABLE_CHANGES:
            continue
        if isinstance(value, dict):
            for name, field in value.items():
                before = saved.get(group, {}).get(name)
                changed = _normalise(before) != _normalise(field)
                if changed and (group, name) not in _RESUMABLE_CHANGES:
                    differences.append(f"{group}.{name}: {before!r} -> {field!r}")
        elif saved.get(group) != value:
            differences.append(f"{group}: {saved.get(group)!r} -> {value!r}")
    return differences


def _normalise(value):
    return list(value) if isinstance(value, tuple | list) else value


class Checkpointer:
    def __init__(self, run_dir: Path, *, keep: int = 2, read_only: bool = False):
        """`read_only` for readers of a run that may still be training: they must leave
        its unfinished (temporary) checkpoint directories alone, and unreadable ones where
        they are."""
        self.directory = (Path(run_dir) / "checkpoints").absolute()
        self._read_only = read_only
        self._saving: int | None = None  # the step being written in the background
        self._failed = False
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=not read_only, read_only=read_only,
                cleanup_tmp_directories=not read_only, enable_async_checkpointing=True,
            ),
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint, after any save in progress has finished."""
        self.wait_until_finished()
        return self._manager.latest_step()

    def save(self, step: int, *, state, replay, counters: dict) -> None:
        """Starts writing a checkpoint and returns while it is written in the background
        (a save still in progress is finished first)."""
        # Private copies for the background write to hold: were it to hold the training
        # step's own buffers, their donation would be refused and every update meanwhile
        # would copy the whole replay.
        arrays = jax.tree.map(jnp.copy, {"state": state, "replay": replay})
        self.wait_until_finished()
        self._saving = step
        with self._write_errors():
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    arrays=ocp.args.StandardSave(arrays),
                    # The params again on their own, so evaluation loads them without the
                    # replay.
                    params=ocp.args.StandardSave(arrays["state"].params),
                    counters=ocp.args.JsonSave(counters),
                ),
            )

    def wait_until_finished(self) -> None:
        with self._write_errors():
            self._manager.wait_until_finished()
        self._saving = None

    def restore(self, *, state, replay):
        """The newest readable checkpoint, restored into the structure (and shardings) of
        the given templates: (state, replay, counters)."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                {"state": state, "replay": replay})
        restored = self._newest_readable(lambda step: self._manager.restore(
            step,
            args=ocp.args.Composite(
                arrays=ocp.args.StandardRestore(abstract),
                counters=ocp.args.JsonRestore(),
            ),
        ))
        arrays = restored["arrays"]
        return arrays["state"], arrays["replay"], dict(restored["counters"])

    def restore_params(self, params):
        """Only the online params of the newest readable checkpoint (for evaluation),
        shaped like `params`; and its counters."""
        restored = self._newest_readable(lambda step: self._manager.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(
                    jax.tree.map(ocp.utils.to_shape_dtype_struct, params)),
                counters=ocp.args.JsonRestore(),
            ),
        ))
        return restored["params"], dict(restored["counters"])

    def close(self) -> None:
        """Finishes any save in progress (one that failed has been reported already)."""
        if not self._failed:
            with self._write_errors():
                self._manager.close()

    def _newest_readable(self, read):
        """read(step) of the newest checkpoint it succeeds on. Each newer one that fails
        gets one warning line and, unless read-only, is moved aside; when none reads,
        nothing is moved (the cause may be this code, not the files)."""
        failures = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                result = read(step)
            except Exception as error:  # truncated or corrupt files fail in many ways
                failures.append((step, error))
                continue
            for bad, error in failures:
                self._skip(bad, error, using=step)
            return result
        if not failures:
            raise FileNotFoundError(f"no checkpoint in {self.directory}: the run has not "
                                    "saved one yet; train it first (dreamzero train)")
        step, error = failures[0]
        raise CheckpointError(
            f"no readable checkpoint in {self.directory} (the newest, at env step {step}: "
            f"{_one_line(error)}): move that directory aside to start the run over, or use "
            "a new --logdir")

    def _skip(self, step: int, error: Exception, *, using: int) -> None:
        path = self.directory / str(step)
        if self._read_only:
            print(f"warning: checkpoint {path} is unreadable ({_one_line(error)}); using the "
                  f"one at env step {using}", file=sys.stderr)
            return
        # A name outside orbax's step naming, so it neither lists nor deletes it.
        n = 1
        while (aside := self.directory / f"{step}.corrupt-{n}").exists():
            n += 1
        path.rename(aside)
        self._manager.reload()
        print(f"warning: checkpoint {path} is unreadable ({_one_line(error)}); moved it to "
              f"{aside.name} and resuming from the one at env step {using}", file=sys.stderr)

    @contextlib.contextmanager
    def _write_errors(self):
        """A failed write (raised by the call itself or, for a background write, by the
        next wait) -> one CheckpointError naming the checkpoint that is still intact."""
        try:
            yield
        except Exception as error:
            self._failed = True
            # No wait here: it would raise the same failure again.
            intact = [s for s in self._manager.all_steps() if s != self._saving]
            kept = (f"the one at env step {max(intact)} is intact" if intact
                    else "there is no earlier one")
            raise CheckpointError(
                f"writing the checkpoint at env step {self._saving} to {self.directory} failed "
                f"({_one_line(error)}); {kept}: fix the cause (e.g. free disk space) and rerun "
                "the same command to resume") from error


def saved_steps(run_dir: Path) -> list[int]:
    """The run's complete checkpoints on disk, oldest first (orbax gives a step's directory
    its number only once the write is done)."""
    root = Path(run_dir) / "checkpoints"
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.exists() else []


def saved_counters(run_dir: Path) -> dict:
    """The counters (env steps, updates, replay_written, ...) of the newest checkpoint."""
    step = saved_steps(run_dir)[-1]
    return json.loads((Path(run_dir) / "checkpoints" / str(step) / "counters" / "metadata")
                      .read_text())


def _one_line(error: BaseException) -> str:
    """`Type: first line`, short enough for a one-line message."""
    lines = str(error).strip().splitlines()
    # TensorStore's write errors put the cause (the OS error) last, after long paths.
    os_error = re.search(r"os_error_code='(\d+)'", str(error))
    first = os.strerror(int(os_error[1])) if os_error else (lines[0] if lines else "")
    text = f"{type(error).__name__}: {first}".rstrip(": ")
    return text if len(text) <= 200 else text[:197] + "..."


def write_config(run_dir: Path, cfg: config_lib.Config, extra: dict | None = None) -> None:
    data = config_lib.to_dict(cfg) | (extra or {})
    path = Path(run_dir) / "config.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def read_config(run_dir: Path) -> tuple[config_lib.Config, dict]:
    """config.json -> (Config, the extra run facts such as the env spec); RunDirError when
    it is not a dreamzero config."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a dreamzero run directory?")

    def refuse(why: str) -> RunDirError:
        return RunDirError(f"{path} {why}: is {run_dir} a dreamzero run directory?")

    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise refuse(f"is not valid JSON ({_one_line(error)})") from None
    if not isinstance(data, dict):
        raise refuse(f"holds a JSON {type(data).__name__}, not a dreamzero config")
    if not isinstance(data.get("env"), dict) or not isinstance(data["env"].get("name"), str):
        raise refuse("has no env.name, so it is not a dreamzero config")
    fields = {f.name: f.default for f in dataclasses.fields(config_lib.Config)}
    for key, default in fields.items():
        if dataclasses.is_dataclass(default) and not isinstance(data.get(key, {}), dict):
            raise refuse(f"has {key}={data[key]!r} where a group of settings belongs")
    extra = {k: data.pop(k) for k in list(data) if k not in fields}
    try:
        return config_lib.from_dict(data), extra
    except (config_lib.ConfigError, TypeError) as error:
        raise refuse(f"is not a config of this dreamzero ({_one_line(error)})") from None
