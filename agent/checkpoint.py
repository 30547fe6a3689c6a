"""Checkpoints: everything needed to resume exactly, written atomically by orbax.

A checkpoint holds the training state (params, target params, optimiser state, RNG),
the whole replay (frames, priorities, segment boundaries) and the counters. Orbax
writes each step into a temporary directory and renames it when complete, so a kill
at any moment leaves the previous checkpoint intact. Saves are asynchronous: training
goes on while a checkpoint is written in the background.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from agent import config as config_lib

# Fields that may change between a run and its resumption: extending a run, or how
# often it logs, must not refuse the checkpoint.
_RESUMABLE_CHANGES = {("train", "env_steps"), ("preset",), ("logdir",)}


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
        its unfinished (temporary) checkpoint directories alone."""
        self.directory = (Path(run_dir) / "checkpoints").absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=not read_only, read_only=read_only,
                cleanup_tmp_directories=not read_only, enable_async_checkpointing=True,
            ),
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint, after any save in progress has finished."""
        self._manager.wait_until_finished()
        return self._manager.latest_step()

    def save(self, step: int, *, state, replay, counters: dict) -> None:
        """Starts writing a checkpoint and returns while it is written in the background
        (a save still in progress is finished first)."""
        # Private copies for the background write to hold: were it to hold the training
        # step's own buffers, their donation would be refused and every update meanwhile
        # would copy the whole replay.
        arrays = jax.tree.map(jnp.copy, {"state": state, "replay": replay})
        self._manager.save(
            step,
            args=ocp.args.Composite(
                arrays=ocp.args.StandardSave(arrays),
                # The params again on their own, so evaluation loads them without the replay.
                params=ocp.args.StandardSave(arrays["state"].params),
                counters=ocp.args.JsonSave(counters),
            ),
        )

    def wait_until_finished(self) -> None:
        self._manager.wait_until_finished()

    def restore(self, *, state, replay, step: int | None = None):
        """Restores into the structure (and shardings) of the given templates."""
        step = self.latest_step() if step is None else step
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                {"state": state, "replay": replay})
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                arrays=ocp.args.StandardRestore(abstract),
                counters=ocp.args.JsonRestore(),
            ),
        )
        arrays = restored["arrays"]
        return arrays["state"], arrays["replay"], dict(restored["counters"])

    def restore_params(self, params, step: int | None = None):
        """Only the online params (for evaluation), shaped like `params`; and the counters."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}: train the run first")
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(
                    jax.tree.map(ocp.utils.to_shape_dtype_struct, params)),
                counters=ocp.args.JsonRestore(),
            ),
        )
        return restored["params"], dict(restored["counters"])

    def close(self) -> None:
        """Finishes any save in progress."""
        self._manager.close()


def write_config(run_dir: Path, cfg: config_lib.Config, extra: dict | None = None) -> None:
    data = config_lib.to_dict(cfg) | (extra or {})
    path = Path(run_dir) / "config.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def read_config(run_dir: Path) -> tuple[config_lib.Config, dict]:
    """config.json -> (Config, the extra run facts such as the env spec)."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a dreamzero run directory?")
    data = json.loads(path.read_text())
    fields = {f.name for f in dataclasses.fields(config_lib.Config)}
    extra = {k: data.pop(k) for k in list(data) if k not in fields}
    return config_lib.from_dict(data), extra
