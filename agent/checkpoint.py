"""Checkpoints: everything needed to resume exactly, written atomically.

A checkpoint holds the training state (params, target params, optimiser state, RNG),
the whole replay (frames, priorities, segment boundaries) and the counters. Orbax
writes each step into a temporary directory and renames it when complete, so a kill
at any moment leaves the previous checkpoint intact. Saves are asynchronous: training
goes on while a checkpoint is written in the background.

The replay's frames (nearly all of its memory: 2.6 GiB at Atari-100k) are
kept apart, in checkpoints/frames/: each save adds one file with the frames written
since the previous save, and a checkpoint lists the files it reads. Files are written
(atomically) before the checkpoint that lists them and never rewritten, so a save
costs the frames that changed, not the whole buffer, and every checkpoint stays whole;
files no kept checkpoint lists are deleted.

Restoring takes the newest checkpoint that reads back; a newer one that does not
(truncated or corrupt files) is moved aside, never deleted. A failed write (a full
disk) is one CheckpointError and leaves the previous checkpoint as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.metadata
import io
import json
import logging
import os
import sys
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from agent import config as config_lib
from agent import replay as replay_lib
from agent.errors import one_line

# Fields that may change between a run and its resumption: extending a run, or how
# often it logs, must not refuse the checkpoint.
_RESUMABLE_CHANGES = {("train", "env_steps"), ("train", "devices"), ("preset",), ("logdir",)}


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
    each read still in flight (hundreds), or asyncio's "exception was never retrieved" for
    each such read that failed too (its message names the OCDBT store, not orbax)."""
    for name in ("absl", "asyncio"):
        logging.getLogger(name).addFilter(_not_orbax)
    if not getattr(sys.unraisablehook, "drops_closed_loop_errors", False):
        sys.unraisablehook = _dropping_closed_loop_errors(sys.unraisablehook)


def _not_orbax(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return "/orbax/" not in record.pathname and not any(
        mark in message for mark in ("/orbax/", "in OCDBT database"))


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
        self._frames = _FrameFiles(self.directory / "frames")
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

    def save(self, step: int, *, state, replay: replay_lib.Replay, counters: dict) -> None:
        """Writes the frames added since the last save, then starts writing the rest and
        returns while it is written in the background (a save still in progress is
        finished first)."""
        # Private copies for the background write to hold: were it to hold the training
        # step's own buffers, their donation would be refused and every update meanwhile
        # would copy them.
        arrays = jax.tree.map(jnp.copy, {"state": state, "replay": _without_frames(replay)})
        self.wait_until_finished()
        self._saving = step
        with self._write_errors():
            self._frames.delete_unlisted(listed_frame_files(self.directory.parent))
            files = self._frames.add(replay)
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    arrays=ocp.args.StandardSave(arrays),
                    # The params again on their own, so evaluation loads them without the
                    # replay.
                    params=ocp.args.StandardSave(arrays["state"].params),
                    counters=ocp.args.JsonSave(counters),
                    frames=ocp.args.JsonSave({"files": files}),
                ),
            )

    def wait_until_finished(self) -> None:
        with self._write_errors():
            self._manager.wait_until_finished()
        self._saving = None

    def restore(self, *, state, replay: replay_lib.Replay):
        """The newest readable checkpoint, restored into the structure (and shardings) of
        the given templates: (state, replay, counters). The template replay's frames are
        overwritten in place."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                {"state": state, "replay": _without_frames(replay)})

        def read(step):
            restored = self._manager.restore(step, args=ocp.args.Composite(
                arrays=ocp.args.StandardRestore(abstract),
                counters=ocp.args.JsonRestore(),
                frames=ocp.args.JsonRestore(),
            ))
            arrays = restored["arrays"]
            frames = self._frames.read(restored["frames"]["files"], replay.frames,
                                       written=int(arrays["replay"]["written"]))
            return arrays["state"], replay.replace(frames=frames, **arrays["replay"]), dict(
                restored["counters"])

        return self._newest_readable(read)

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
            if not self._read_only:
                self._frames.delete_unlisted(listed_frame_files(self.directory.parent))

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
            f"{one_line(error)}): move that directory aside to start the run over, or use "
            "a new --logdir")

    def _skip(self, step: int, error: Exception, *, using: int) -> None:
        path = self.directory / str(step)
        if self._read_only:
            print(f"warning: checkpoint {path} is unreadable ({one_line(error)}); using the "
                  f"one at env step {using}", file=sys.stderr)
            return
        # A name outside orbax's step naming, so it neither lists nor deletes it.
        n = 1
        while (aside := self.directory / f"{step}.corrupt-{n}").exists():
            n += 1
        path.rename(aside)
        self._manager.reload()
        print(f"warning: checkpoint {path} is unreadable ({one_line(error)}); moved it to "
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
                f"({one_line(error)}); {kept}: fix the cause (e.g. free disk space) and rerun "
                "the same command to resume") from error


def _without_frames(replay: replay_lib.Replay) -> dict:
    """The replay's fields but its frames, which are saved on their own."""
    return {name: value for name, value in replay.items()
            if name != "frames" and value is not None}  # no arms for Discrete actions


class _FrameFiles:
    """The replay's frames as files, one per save: `FIRST-END.npy.zlib` holds the frames
    of absolute times [FIRST, END) of every env row, [N, END - FIRST, *frame], as a .npy
    compressed by zlib (level 1: Atari frames shrink ~90 times at ~500 MiB/s)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._files: list[str] = []  # what the last save (or restore) listed, oldest first
        self._written = 0  # the replay's `written` then

    def add(self, replay: replay_lib.Replay) -> list[str]:
        """Writes the frames added since the last save into a new file; returns the files
        that now hold the replay's frames, oldest first."""
        written, length = int(replay.written), replay.length
        oldest = max(0, written - length)  # the ring holds times [oldest, written)
        files = [name for name in self._files if _span(name)[1] > oldest]
        first = max(self._written, oldest)
        if written > first:
            name = f"{first:012d}-{written:012d}.npy.zlib"
            self._write(name, np.asarray(replay.frames[:, np.arange(first, written) % length]))
            files.append(name)
        self._files, self._written = files, written
        return files

    def read(self, files: list[str], frames: jax.Array, *, written: int) -> jax.Array:
        """`frames` (the replay's buffer, donated) with the listed files written into their
        columns. Every file is read and checked before any is written: a missing or
        corrupt one raises and leaves `frames` as it was."""
        length = frames.shape[1]
        oldest = max(0, written - length)
        spans = [_span(name) for name in files]
        starts, ends = [first for first, _ in spans], [end for _, end in spans]
        tiled = (starts[0] <= oldest and starts[1:] == ends[:-1] and ends[-1] == written
                 if spans else written == 0)
        if not tiled:
            raise ValueError(f"frame files {files} do not cover the replay's times "
                             f"[{oldest}, {written})")
        for name in files:  # read twice: holding them all would double the replay's memory
            self._load(name, frames)
        for name, (first, end) in zip(files, spans, strict=True):
            start = max(first, oldest)
            data = self._load(name, frames)[:, start - first:]
            frames = _set_columns(frames, np.arange(start, end) % length, data)
        self._files, self._written = list(files), written
        return frames

    def delete_unlisted(self, listed: set[str] | None) -> None:
        """Deletes the files (and unfinished writes) that neither a checkpoint on disk nor
        the last save lists; nothing when `listed` is None (unknown)."""
        if listed is None or not self.directory.exists():
            return
        for path in self.directory.iterdir():
            if path.name not in listed and path.name not in self._files:
                path.unlink()

    def _write(self, name: str, frames: np.ndarray) -> None:
        """Written whole or not at all, and on disk before a checkpoint lists it."""
        buffer = io.BytesIO()
        np.save(buffer, frames)
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.directory / f"{name}.partial"
        with open(partial, "wb") as file:
            file.write(zlib.compress(buffer.getbuffer(), 1))
            file.flush()
            os.fsync(file.fileno())
        partial.replace(self.directory / name)

    def _load(self, name: str, frames: jax.Array) -> np.ndarray:
        first, end = _span(name)
        data = np.load(io.BytesIO(zlib.decompress((self.directory / name).read_bytes())))
        expected = (frames.shape[0], end - first, *frames.shape[2:])
        if data.shape != expected or data.dtype != frames.dtype:
            raise ValueError(f"frame file {name} holds {data.dtype}{list(data.shape)}, "
                             f"not {frames.dtype}{list(expected)}")
        return data


def _span(name: str) -> tuple[int, int]:
    first, end = name.removesuffix(".npy.zlib").split("-")
    return int(first), int(end)


@functools.partial(jax.jit, donate_argnums=0)
def _set_columns(frames, columns, values):
    return frames.at[:, columns].set(values)


def saved_steps(run_dir: Path) -> list[int]:
    """The run's complete checkpoints on disk, oldest first (orbax gives a step's directory
    its number only once the write is done)."""
    root = Path(run_dir) / "checkpoints"
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.exists() else []


def listed_frame_files(run_dir: Path) -> set[str] | None:
    """The frame files (in checkpoints/frames/) that the run's complete checkpoints list;
    None if one of their lists cannot be read."""
    listed = set()
    for step in saved_steps(run_dir):
        try:
            listed.update(json.loads((Path(run_dir) / "checkpoints" / str(step) / "frames"
                                      / "metadata").read_text())["files"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return listed


def saved_counters(run_dir: Path) -> dict:
    """The counters (env steps, updates, replay_written, ...) of the newest checkpoint."""
    step = saved_steps(run_dir)[-1]
    return json.loads((Path(run_dir) / "checkpoints" / str(step) / "counters" / "metadata")
                      .read_text())


def _version() -> str:
    return importlib.metadata.version("dreamzero")


def write_config(run_dir: Path, cfg: config_lib.Config, extra: dict | None = None) -> None:
    data = config_lib.to_dict(cfg) | {"dreamzero_version": _version()} | (extra or {})
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
        raise refuse(f"is not valid JSON ({one_line(error)})") from None
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
        # Run directories from before the version stamp have none.
        written = extra.get("dreamzero_version", "older than 0.1.0")
        raise RunDirError(
            f"{path} was written by dreamzero {written}, this is {_version()} ({error}): "
            "train into a new --logdir, or use the version that wrote it") from None
