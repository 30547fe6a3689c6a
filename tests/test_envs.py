"""agent.envs: the Atari-100k protocol as it really runs, catch, gymnasium and custom envs."""

import json
import textwrap
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from ale_py import roms

from agent.acting import Actor
from agent.envs import ATARI_100K_GAMES, EnvError, catch, check_env, make_env, resolve_spec

ROOT = Path(__file__).resolve().parents[1]
FIRE = 1  # in breakout's minimal action set: NOOP, FIRE, RIGHT, LEFT


@pytest.fixture
def in_repo(monkeypatch):
    """User modules such as examples.custom_env are imported from the working directory."""
    monkeypatch.chdir(ROOT)


def rollout(env, actions):
    """Steps through actions [T, N]; returns the reset obs and the list of Steps."""
    first = env.reset()
    return first, [env.step(a) for a in actions]


# Atari


def test_atari_protocol_shapes_and_settings():
    with make_env("pong", num_envs=2, seed=0) as env:
        obs = env.reset()
        step = env.step(np.zeros(2, np.int64))
    assert obs.shape == step.obs.shape == (2, 96, 96, 3) and obs.dtype == np.uint8
    assert env.spec.obs_shape == (96, 96, 12) and env.num_actions == 6
    assert step.reward.dtype == np.float32 and step.episode_length.dtype == np.int32
    settings = env.spec.settings
    assert settings["frameskip"] == 4 and settings["repeat_action_probability"] == 0.0
    assert settings["noop_max"] == 30 and settings["max_episode_frames"] == 108_000
    assert settings["reward_clipping"] is False and settings["life_loss_terminal"] is True
    assert resolve_spec("pong", mode="eval").settings["life_loss_terminal"] is False
    assert obs.max() > 0
    assert json.loads(json.dumps(env.spec.to_dict()))["obs_shape"] == [96, 96, 12]


def test_gym_spec_reports_the_envs_own_time_limit():
    # CartPole-v1 ends itself after 500 env steps, so its episodes never reach 108k.
    assert resolve_spec("CartPole-v1").settings["max_episode_steps"] == 500
    assert resolve_spec("CartPole-v1", action_repeat=2).settings["max_episode_steps"] == 250
    assert resolve_spec("CartPole-v1", max_episode_frames=100).settings["max_episode_steps"] == 100


def test_atari_grayscale_frames_have_one_channel():
    # The atari100k-cpu preset's frames: ALE's luminance, one channel, stacked as RGB is.
    with make_env("pong", num_envs=2, seed=0, image_size=64, grayscale=True) as env:
        obs = env.reset()
        step = env.step(np.zeros(2, np.int64))
    assert obs.shape == step.obs.shape == (2, 64, 64, 1) and obs.dtype == np.uint8
    assert env.spec.obs_shape == (64, 64, 4) and env.spec.settings["image"] == "64x64 grayscale"
    assert obs.max() > 0
    with pytest.raises(EnvError, match="grayscale applies to Atari games only"):
        resolve_spec("catch", grayscale=True)


@pytest.mark.parametrize(
    "name, game, actions",
    [
        ("pong", "pong", 6),
        ("ALE/Breakout-v5", "breakout", 4),
        ("MsPacman", "ms_pacman", 9),
        ("MsPacmanNoFrameskip-v4", "ms_pacman", 9),
        ("atari:up_n_down", "up_n_down", 6),
        ("UpNDown", "up_n_down", 6),
    ],
)
def test_atari_names_and_minimal_action_sets(name, game, actions):
    spec = resolve_spec(name)
    assert spec.name == f"atari:{game}" and spec.num_actions == actions
    assert resolve_spec(spec.name) == spec


def test_atari_100k_games_are_installed():
    assert len(ATARI_100K_GAMES) == 26
    assert set(ATARI_100K_GAMES) <= set(roms.get_all_rom_ids())


def test_atari_same_seed_same_trajectory_other_seed_differs():
    actions = np.random.default_rng(0).integers(6, size=(60, 2))
    runs = []
    for seed in (3, 3, 4):
        with make_env("pong", num_envs=2, seed=seed) as env:
            first, steps = rollout(env, actions)
        runs.append(
            (np.stack([first] + [s.obs for s in steps]), np.stack([s.reward for s in steps]))
        )
    # Identical repeats also show there are no sticky actions; the seed moves the no-op reset.
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])
    assert not np.array_equal(runs[0][0], runs[2][0])


def test_life_loss_ends_training_episodes_only():
    rng = np.random.default_rng(0)
    actions = np.concatenate([[FIRE], rng.integers(4, size=150)])[:, None]  # [T, 1]
    with make_env("breakout", num_envs=1, seed=0, mode="train") as env:
        _, train = rollout(env, actions)
    with make_env("breakout", num_envs=1, seed=0, mode="eval") as env:
        _, evaluation = rollout(env, actions)
    t = next(i for i, s in enumerate(train) if s.train_terminal[0])
    assert not train[t].terminated[0] and not train[t].truncated[0]
    assert train[t].episode_length[0] == 0  # the episode goes on
    assert not evaluation[t].train_terminal[0]
    # The game continues: both modes see the same frames.
    assert all(np.array_equal(a.obs, b.obs) for a, b in zip(train, evaluation, strict=True))


def test_actor_stacks_restart_at_life_losses_in_training_only():
    """Envs hand out single frames and the Actor stacks them by the replay's rule: a stack
    starts over with its first frame repeated at a reset and at a training terminal."""
    rng = np.random.default_rng(0)
    actions = np.concatenate([[FIRE], rng.integers(4, size=150)])[:, None]  # [T, 1]
    seen = {}
    for mode in ("train", "eval"):
        with make_env("breakout", num_envs=1, seed=0, mode=mode) as env:
            actor = Actor(env, act=None)  # stepped on the given actions, no search
            assert np.array_equal(actor.obs, np.concatenate([actor.frames] * 4, axis=-1))
            seen[mode] = []
            for action in actions:
                plan = SimpleNamespace(action=action, action_weights=None, arms=None)
                step, _ = actor.step(plan)
                seen[mode].append((step, actor.obs))  # obs: [1, H, W, 4 * C]
    t = next(i for i, (step, _) in enumerate(seen["train"]) if step.train_terminal[0])
    restarted = np.concatenate([seen["train"][t][0].obs] * 4, axis=-1)
    assert np.array_equal(seen["train"][t][1], restarted)
    assert not np.array_equal(seen["eval"][t][1], restarted)  # the same frames run on


def test_frame_cap_truncates():
    with make_env("pong", num_envs=2, seed=0, max_episode_frames=400) as env:
        _, steps = rollout(env, np.zeros((101, 2), np.int64))
    cap = steps[99]
    assert cap.truncated.all() and not cap.terminated.any() and cap.train_terminal.sum() == 0
    assert (cap.episode_length == 400 // 4).all()
    assert np.allclose(cap.episode_return, np.sum([s.reward for s in steps[:100]], axis=0))
    assert not any(s.truncated.any() for s in steps[:99] + steps[100:])


def test_game_over_returns_next_episode_and_no_reset_step():
    rng = np.random.default_rng(1)
    with make_env("breakout", num_envs=1, seed=0, mode="eval") as env:
        fresh = env.reset()
        length = 0
        for _ in range(5000):
            step = env.step(rng.integers(4, size=1))
            length += 1
            if step.terminated[0]:
                break
        after = env.step(np.array([FIRE]))
    assert step.terminated[0] and step.episode_length[0] == length
    # Breakout's first frame is the same for every no-op count, so compare with a reset.
    assert np.array_equal(step.obs, fresh)
    # The next step already belongs to the new episode: no hidden reset step in between
    # (one would show the first frame again).
    assert not np.array_equal(after.obs, step.obs)
    assert not after.terminated[0] and after.episode_length[0] == 0


# catch


def test_catch_is_deterministic():
    actions = np.random.default_rng(0).integers(3, size=(200, 4))
    runs = []
    for seed in (5, 5, 6):
        with make_env("catch", num_envs=4, seed=seed) as env:
            first, steps = rollout(env, actions)
        runs.append(
            (np.stack([first] + [s.obs for s in steps]), np.stack([s.reward for s in steps]))
        )
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])
    assert not np.array_equal(runs[0][0], runs[2][0])
    assert runs[0][0].shape == (201, 4, 10, 10, 1) and runs[0][0].dtype == np.uint8


def test_catch_random_policy_return():
    rng = np.random.default_rng(0)
    returns = []
    with make_env("catch", num_envs=200, seed=0) as env:
        env.reset()
        for _ in range(3 * 90):
            step = env.step(rng.integers(3, size=200))
            returns += step.episode_return[step.terminated].tolist()
    assert len(returns) == 600
    assert abs(np.mean(returns) - catch.RANDOM_RETURN) < 0.4  # standard error ~0.08


def test_catch_perfect_policy_gets_optimal_return():
    with make_env("catch", num_envs=8, seed=0, frame_stack=2) as env:
        assert env.spec.obs_shape == (10, 10, 2)
        obs = env.reset()
        finished = []
        for _ in range(2 * 90):
            frame = obs[..., 0]  # [N, 10, 10]
            ball = (frame == catch.BALL).any(axis=1).argmax(axis=1)
            paddle = (frame[:, -1] == catch.PADDLE).argmax(axis=1)
            step = env.step(np.sign(ball - paddle) + 1)
            obs = step.obs
            finished += step.episode_return[step.terminated].tolist()
    assert finished == [catch.OPTIMAL_RETURN] * 16


# gymnasium ids and custom envs


def test_gym_vector_env():
    with pytest.warns(UserWarning, match="gymnasium env checker") as record:
        spec = resolve_spec("CartPole-v1")
    assert len(record) == 1  # the checker's findings come as one warning
    assert spec.name == "gym:CartPole-v1" and spec.stack == 1 and spec.obs_shape == (4,)
    with make_env("CartPole-v1", num_envs=3, seed=0, frame_stack=4) as env:
        first, steps = rollout(env, np.ones((60, 3), np.int64))
    assert first.shape == (3, 4) and first.dtype == np.float32 and env.num_actions == 2
    ended = [s for s in steps if s.terminated.any()]
    assert ended and all((s.episode_return == s.episode_length)[s.terminated].all() for s in ended)


@pytest.mark.parametrize(
    "name",
    [
        "examples.custom_env:GridTreasure",
        "examples.custom_env:make_small_grid_treasure",
        "examples/custom_env.py:GridTreasure",
    ],
)
def test_custom_env_forms(in_repo, name):
    spec = resolve_spec(name)
    assert spec.name == f"custom:{name}" and spec.kind == "custom" and spec.num_actions == 4
    with make_env(name, num_envs=2, seed=0) as env:
        obs = env.reset()
        step = env.step(np.array([0, 3]))
    assert obs.shape == step.obs.shape == (2, *spec.frame_shape) and obs.dtype == np.uint8


def test_custom_env_from_absolute_path_is_seeded():
    name = f"{ROOT / 'examples' / 'custom_env.py'}:GridTreasure"
    runs = []
    for _ in range(2):
        with make_env(name, num_envs=2, seed=7) as env:
            first, steps = rollout(env, np.full((30, 2), 3))
        runs.append(np.stack([first] + [s.obs for s in steps]))
    assert np.array_equal(runs[0], runs[1])


def test_large_images_are_area_resized(in_repo, monkeypatch):
    # The test's own import: make_env puts the working directory on sys.path only when it
    # loads an env, and another test may or may not have done so in this process.
    monkeypatch.syspath_prepend(str(ROOT))
    import examples.custom_env as custom

    with make_env("examples.custom_env:GridTreasure", num_envs=1, seed=0, image_size=24) as env:
        obs = env.reset()
    native, _ = custom.GridTreasure().reset(seed=0)  # [48, 48, 3], cells of 8x8 pixels
    assert env.spec.frame_shape == (24, 24, 3)
    assert np.array_equal(obs[0], native[::2, ::2])  # each 2x2 block lies in one cell


BAD_ENVS = textwrap.dedent("""
    import gymnasium
    import numpy as np
    from gymnasium import spaces

    class _Base(gymnasium.Env):
        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return self.observation_space.sample(), {}

        def step(self, action):
            return self.observation_space.sample(), 0.0, False, False, {}

    class UnboundedActions(_Base):
        action_space = spaces.Box(-np.inf, np.inf, (2,))
        observation_space = spaces.Box(-1, 1, (3,))

    class GridActions(_Base):
        action_space = spaces.Box(-1, 1, (2, 2))
        observation_space = spaces.Box(-1, 1, (3,))

    class MultiDiscreteActions(_Base):
        action_space = spaces.MultiDiscrete([2, 3])
        observation_space = spaces.Box(-1, 1, (3,))

    class DictObs(_Base):
        action_space = spaces.Discrete(2)
        observation_space = spaces.Dict({"x": spaces.Box(-1, 1, (3,)), "n": spaces.Discrete(3)})

    class FloatImage(_Base):
        action_space = spaces.Discrete(2)
        observation_space = spaces.Box(0, 1, (8, 8, 3))

    class Gray(_Base):
        action_space = spaces.Discrete(2, start=1)
        observation_space = spaces.Box(0, 255, (12, 10), np.uint8)
""")


@pytest.fixture
def bad_envs(tmp_path):
    path = tmp_path / "bad_envs.py"
    path.write_text(BAD_ENVS)
    return path


def test_grayscale_images_get_a_channel(bad_envs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checker dislikes the sampled observations
        spec = resolve_spec(f"{bad_envs}:Gray")
    assert spec.frame_shape == (12, 10, 1) and spec.obs_shape == (12, 10, 4)
    with make_env(f"{bad_envs}:Gray", num_envs=2, seed=0) as env:
        assert env.reset().shape == (2, 12, 10, 1)
        assert env.step(np.array([0, 1])).obs.shape == (2, 12, 10, 1)


@pytest.mark.parametrize(
    "name, keywords, fragments",
    [
        ("not_a_game", {}, ["unknown env 'not_a_game'", "closest Atari games:"]),
        ("pongg", {}, ["closest Atari games: pong"]),
        ("atari:pongg", {}, ["closest Atari games: pong"]),
        ("cartpole-v1", {}, ["closest gymnasium ids: CartPole-v1"]),
        ("no_such_module_xyz:Env", {}, ["cannot import 'no_such_module_xyz'", "module path"]),
        ("examples/missing.py:Env", {}, ["cannot import 'examples/missing.py'"]),
        ("examples.custom_env:Nope", {}, ["no attribute 'Nope'", "GridTreasure"]),
        ("{bad}:UnboundedActions", {}, ["unbounded actions", "ClipAction or RescaleAction"]),
        ("{bad}:GridActions", {}, ["Box(2, 2) action space", "flat Box (D,)"]),
        ("{bad}:MultiDiscreteActions", {}, ["MultiDiscrete action space", "ActionWrapper"]),
        ("{bad}:DictObs", {}, ["Dict observation space", "ObservationWrapper"]),
        ("{bad}:FloatImage", {}, ["Box(8, 8, 3) float32 observation space", "uint8 image"]),
        ("catch", {"mode": "test"}, ["mode must be 'train' or 'eval'"]),
        ("pong", {"frame_stack": 0}, ["frame_stack must be an integer >= 1"]),
        ("builtin:snake", {}, ["unknown builtin env 'snake'"]),
        ("catch", {"action_repeat": 2}, ["action_repeat 2 applies to gymnasium", "use 1"]),
    ],
)
def test_bad_inputs_give_one_line_errors(in_repo, bad_envs, name, keywords, fragments):
    with pytest.raises(EnvError) as error:
        resolve_spec(name.format(bad=bad_envs), **keywords)
    message = str(error.value)
    assert "\n" not in message and isinstance(error.value, ValueError)
    for fragment in fragments:
        assert fragment in message


def test_canonical_names_resolve_to_the_same_spec(in_repo):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("catch", "CartPole-v1", "examples.custom_env:GridTreasure"):
            spec = resolve_spec(name)
            assert resolve_spec(spec.name) == spec


def test_check_env_reports_spec_and_rollout():
    report = check_env("catch", steps=400)
    for fragment in (
        "builtin:catch",
        "(10, 10, 4)",
        "random_return",
        "episodes finished  4",
        "env steps/s",
    ):
        assert fragment in report
    assert "repeat_action_probability" in check_env("breakout", steps=40, num_envs=2)


BOX_ACTIONS = textwrap.dedent("""
    import gymnasium
    import numpy as np
    from gymnasium import spaces

    class Echo(gymnasium.Env):
        \"\"\"Observes the last action it was given, in the env's own units, as a Dict of
        float Boxes (DeepMind Control's form); pays 1 a step.\"\"\"
        action_space = spaces.Box(np.array([-2.0, 0.0], np.float32),
                                  np.array([2.0, 10.0], np.float32))
        observation_space = spaces.Dict({"position": spaces.Box(-20, 20, (2,), np.float32),
                                          "pole": spaces.Box(-1, 1, (1,), np.float32)})

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return {"position": np.zeros(2, np.float32), "pole": np.zeros(1, np.float32)}, {}

        def step(self, action):
            obs = {"position": np.asarray(action, np.float32), "pole": np.zeros(1, np.float32)}
            return obs, 1.0, False, False, {}
""")


def test_box_actions_are_rescaled_from_unit_bounds(tmp_path):
    path = tmp_path / "box_env.py"
    path.write_text(BOX_ACTIONS)
    spec = resolve_spec(f"{path}:Echo")
    assert (spec.num_actions, spec.action_dim, spec.continuous) == (0, 2, True)
    assert spec.settings["action_low"] == [-2.0, 0.0]
    with make_env(f"{path}:Echo", num_envs=2, seed=0) as env:
        env.reset()
        step = env.step(np.array([[-1.0, 1.0], [0.5, 0.0]], np.float32))
        assert np.allclose(step.obs[:, 1:], [[-2.0, 10.0], [1.0, 5.0]])  # pole first
        with pytest.raises(ValueError, match=r"in \[-1, 1\]"):
            env.step(np.array([[1.5, 0.0], [0.0, 0.0]], np.float32))
        with pytest.raises(ValueError, match=r"\[2, 2\] floats"):
            env.step(np.array([0, 1]))
    repeated = make_env(f"{path}:Echo", num_envs=1, seed=0, action_repeat=3)
    repeated.reset()
    assert repeated.step(np.zeros((1, 2), np.float32)).reward[0] == 3.0  # 1 per env step
    assert repeated.spec.settings["observation"] == "Dict ['pole', 'position'] flattened"
    assert repeated.spec.frame_shape == (3,)
    report = check_env("Pendulum-v1", steps=40, num_envs=2)
    for fragment in ("Box(1,) in [-1, 1]", "action_low", "[-2.0]", "action_high", "[2.0]"):
        assert fragment in report


BOOL_PLANES = textwrap.dedent("""
    import gymnasium
    import numpy as np
    from gymnasium import spaces

    class Planes(gymnasium.Env):
        action_space = spaces.Discrete(2)
        observation_space = spaces.Box(0, 1, (6, 5, 2), bool)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return np.indices((6, 5, 2)).sum(axis=0) % 2 == 1, {}

        def step(self, action):
            return self.reset()[0], 0.0, False, False, {}
""")


def test_bool_images_become_uint8_0_255(tmp_path):
    path = tmp_path / "planes.py"
    path.write_text(BOOL_PLANES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checker's findings are not under test
        spec = resolve_spec(f"{path}:Planes", frame_stack=1)
    assert spec.is_image and spec.frame_shape == (6, 5, 2) and spec.frame_dtype == "uint8"
    with make_env(f"{path}:Planes", num_envs=2, seed=0, frame_stack=1) as env:
        obs = env.reset()
    expected = np.where(np.indices((6, 5, 2)).sum(axis=0) % 2 == 1, 255, 0)
    assert obs.dtype == np.uint8 and (obs == expected).all()


def test_minatar_ids():
    pytest.importorskip("minatar")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MinAtar's reset does not seed np_random
        spec = resolve_spec("MinAtar/Breakout-v1")
    assert spec.name == "gym:MinAtar/Breakout-v1" and spec.frame_shape == (10, 10, 4)
    assert spec.num_actions == 3
    with make_env("MinAtar/Breakout-v1", num_envs=2, seed=0) as env:
        obs = env.reset()
    assert set(np.unique(obs)) == {0, 255}
