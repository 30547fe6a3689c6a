import numpy as np
import pytest

from agent import scores
from agent.envs import ATARI_100K_GAMES
from agent.scores import anchor, atari_game, display_name, human_normalized


def test_the_26_games_in_csv_order():
    assert tuple(scores._ROWS) == ATARI_100K_GAMES  # scores.csv has a row for each, in order
    assert len(ATARI_100K_GAMES) == 26
    assert ATARI_100K_GAMES[:3] == ("alien", "amidar", "assault")
    assert ATARI_100K_GAMES[-1] == "up_n_down"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("pong", "pong"),
        ("Pong", "pong"),
        ("ALE/Pong-v5", "pong"),
        ("atari:pong", "pong"),
        ("PongNoFrameskip-v4", "pong"),
        ("ms_pacman", "ms_pacman"),
        ("MsPacman", "ms_pacman"),
        ("ALE/MsPacman-v5", "ms_pacman"),
        ("UpNDown", "up_n_down"),
        ("kung_fu_master", "kung_fu_master"),
        ("catch", None),
        ("CartPole-v1", None),
        ("pongg", None),
        ("MinAtar/Breakout-v1", None),
        ("examples/breakout.py:Breakout", None),
    ],
)
def test_atari_game_name_forms(name, expected):
    assert atari_game(name) == expected


def test_hns_is_zero_at_random_and_one_at_human():
    for game in ATARI_100K_GAMES:
        refs = anchor(game)
        assert human_normalized(game, refs["random"]) == pytest.approx(0.0)
        assert human_normalized(game, refs["human"]) == pytest.approx(1.0)


def test_hns_of_known_scores_and_arrays():
    # Pong: random -20.7, human 14.6.
    assert human_normalized("Pong", -3.05) == pytest.approx(0.5)
    hns = human_normalized("pong", np.array([-20.7, 14.6, 49.9]))
    np.testing.assert_allclose(hns, [0.0, 1.0, 2.0])
    assert isinstance(human_normalized("pong", 0), float)


def test_anchor_and_display_name():
    refs = anchor("ALE/Breakout-v5")
    assert (refs["random"], refs["human"], refs["efficientzero"]) == (1.7, 30.5, 414.1)
    assert (refs["drq_eps"], refs["spr"], refs["bbf"]) == (19.8, 19.6, 357.0)
    assert display_name("ms_pacman") == "MsPacman"
    with pytest.raises(KeyError, match="catch"):
        anchor("catch")
