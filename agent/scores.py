"""Atari-100k score anchors: random, human and published methods' per-game scores.

The table ships with the package (`agent/scores.csv`); games are keyed by their ALE id
(`pong`, `ms_pacman`, `up_n_down`, ...). Human-normalised score (HNS) is
(score - random) / (human - random), so random play is 0 and the human reference is 1.

Each published column is a raw game score: the mean over the method's released runs of
that game (EfficientZero's paper mean; DrQ(eps), SPR, CURL from IRIS's results files; BBF
from google-research's score files, replay ratio 8 and 2; SimPLe, MuZero, IRIS, DreamerV3,
STORM, DIAMOND from their authors' releases).
"""

from __future__ import annotations

import csv
import io
import re
from importlib import resources

import numpy as np

# Published columns of scores.csv and the names reports show; the first four are the
# report's per-game anchors.
METHODS = {
    "drq_eps": "DrQ(ε)", "spr": "SPR", "efficientzero": "EfficientZero", "bbf": "BBF",
    "simple": "SimPLe", "curl": "CURL", "muzero": "MuZero", "iris": "IRIS",
    "dreamerv3": "DreamerV3", "storm": "STORM", "diamond": "DIAMOND", "bbf_rr2": "BBF (RR 2)",
}  # fmt: skip
REPORT_METHODS = ("drq_eps", "spr", "efficientzero", "bbf")


def _load_rows() -> dict[str, dict]:
    """ale_id -> {"game": display name, "random": ..., "human": ..., method: ...}."""
    text = resources.files("agent").joinpath("scores.csv").read_text()
    rows = {}
    for r in csv.DictReader(io.StringIO(text)):
        scores = {key: float(r[key]) for key in ("random", "human", *METHODS)}
        rows[r["ale_id"]] = {"game": r["game"], **scores}
    return rows


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


def _row(game: str) -> dict:
    ale_id = atari_game(game)
    if ale_id is None:
        raise KeyError(f"{game!r} is not one of the 26 Atari-100k games")
    return _ROWS[ale_id]


def display_name(game: str) -> str:
    """The CamelCase name used in papers ("MsPacman") for any accepted name form."""
    return _row(game)["game"]


def anchor(game: str) -> dict[str, float]:
    """Reference scores: {"random": ..., "human": ..., and one per METHODS key}."""
    return {key: value for key, value in _row(game).items() if key != "game"}


def human_normalized(game: str, score: float | np.ndarray) -> float | np.ndarray:
    """HNS of raw score(s): 0 at random play, 1 at the human reference."""
    row = _row(game)
    hns = (np.asarray(score, dtype=np.float64) - row["random"]) / (row["human"] - row["random"])
    return float(hns) if hns.ndim == 0 else hns
