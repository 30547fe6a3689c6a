"""Run logs: DIR/metrics.jsonl (one JSON object per log step) and TensorBoard events."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tensorboardX import SummaryWriter


def truncate_jsonl(path: Path, *, max_env_steps: int) -> None:
    """Drops lines logged after the checkpoint a run resumes from (and a torn last line),
    so a resumed run's log has no duplicated steps."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("env_steps", 0) <= max_env_steps:
            kept.append(line)
    # Replaced whole, so a kill while rewriting it cannot cut the log short.
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict]:
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsLog:
    def __init__(self, run_dir: Path, *, resume_env_steps: int):
        self.path = Path(run_dir) / "metrics.jsonl"
        truncate_jsonl(self.path, max_env_steps=resume_env_steps)
        # purge_step hides TensorBoard events written after the checkpoint we resume from.
        self._writer = SummaryWriter(str(run_dir), purge_step=resume_env_steps or None)

    def write(self, record: dict) -> None:
        record = {k: _plain(v) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        step = record["env_steps"]
        for key, value in record.items():
            if key != "env_steps" and isinstance(value, float | int) and math.isfinite(value):
                self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _plain(value):
    """numpy / jax scalars -> Python numbers for JSON."""
    if hasattr(value, "item"):
        value = value.item()
    return value
