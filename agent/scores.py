"""Atari-100k score anchors: random, human and EfficientZero's published scores.

The table ships with the package (`agent/scores.csv`); games are keyed by their ALE id
(`pong`, `ms_pacman`, `up_n_down`, ...). Human-normalised score (HNS) is
(score - random) / (human - random), so random play is 0 and the human reference is 1.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from importlib import resources

import numpy as np


@dataclass(frozen=True)
class _Row:
    game: str  # display name, e.g. "MsPacman"
    ale_id: str  # e.g. "ms_pacman"
    random: float
    human: float
    efficientzero: float


def _load_rows() -> dict[str, _Row]:
    text = resources.files("agent").joinpath("scores.csv").read_text()
    rows = (
        _Row(
            game=r["game"],
            ale_id=r["ale_id"],
            random=float(r["random"]),
            human=float(r["human"]),
            efficientzero=float(r["efficientzero"]),
        )
        for r in csv.DictReader(io.StringIO(text))
    )
    return {row.ale_id: row for row in rows}


_ROWS = _load_rows()  # the 26 games of agent.envs.ATARI_100K_GAMES, in its order

# "ms_pacman", "MsPacman" and "Ms-Pacman" all squash to "mspacman".
_BY_SQUASHED = {re.sub(r"[^a-z0-9]", "", ale_id): ale_id for ale_id in _ROWS}


def atari_game(name: str) -> str | None:
    """The ALE id of one of the 26 Atari-100k games, or None.

    Accepts the forms people type: "pong", "Pong", "ALE/Pong-v5", "atari:pong",
    "PongNoFrameskip-v4", "ms_pacman", "MsPacman", ...
    """
    # Only Atari's own prefixes: "MinAtar/Breakout-v1" is another game.
    base = re.sub(r"^(gym:|atari:|ALE/)*", "", name.strip())
    base = re.sub(r"-v\d+$", "", base)
    base = re.sub(r"(NoFrameskip|Deterministic)$", "", base)
    return _BY_SQUASHED.get(re.sub(r"[^a-z0-9]", "", base.lower()))


def _row(game: str) -> _Row:
    ale_id = atari_game(game)
    if ale_id is None:
        raise KeyError(f"{game!r} is not one of the 26 Atari-100k games")
    return _ROWS[ale_id]


def display_name(game: str) -> str:
    """The CamelCase name used in papers ("MsPacman") for any accepted name form."""
    return _row(game).game


def anchor(game: str) -> dict[str, float]:
    """Published reference scores: {"random": ..., "human": ..., "efficientzero": ...}."""
    row = _row(game)
    return {"random": row.random, "human": row.human, "efficientzero": row.efficientzero}


def human_normalized(game: str, score: float | np.ndarray) -> float | np.ndarray:
    """HNS of raw score(s): 0 at random play, 1 at the human reference."""
    row = _row(game)
    hns = (np.asarray(score, dtype=np.float64) - row.random) / (row.human - row.random)
    return float(hns) if hns.ndim == 0 else hns
