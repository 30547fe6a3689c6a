"""Acting with search: the one place search knobs become `search.plan` arguments, and the
one acting step (stack -> search -> env step -> transition) that training, evaluation and
the benchmarks share."""

from __future__ import annotations

import jax
import numpy as np

import search
import world_model
from agent import replay as replay_lib
from agent.config import SearchConfig
from agent.envs import Step, VectorEnv


def search_kind(cfg: SearchConfig, *, continuous: bool) -> str:
    """`search.kind` with `auto` resolved by the action space."""
    if cfg.kind == "auto":
        return "gumbel" if continuous else "muzero"
    return cfg.kind


def plan_kwargs(cfg: SearchConfig, *, greedy: bool, temperature: float = 1.0,
                continuous: bool = False) -> dict:
    """Keyword arguments of `search.plan`; `greedy` drops all exploration (evaluation)."""
    kind = search_kind(cfg, continuous=continuous)
    kwargs = dict(num_simulations=cfg.num_simulations, kind=kind,
                  qtransform=cfg.qtransform, min_q_range=cfg.min_q_range)
    if kind == "gumbel":
        kwargs.update(
            gumbel_scale=0.0 if greedy else cfg.gumbel_scale,
            max_num_considered_actions=cfg.max_num_considered_actions,
        )
    else:
        kwargs.update(
            temperature=0.0 if greedy else temperature,
            dirichlet_fraction=0.0 if greedy else cfg.dirichlet_fraction,
            dirichlet_alpha=cfg.dirichlet_alpha,
            pb_c_init=cfg.pb_c_init,
            pb_c_base=cfg.pb_c_base,
        )
    return kwargs


def search_roots(cfg: SearchConfig, rng, out, *, continuous: bool):
    """The search roots of an `initial_inference` output: the policy's own actions, or
    sampled arms for Box actions."""
    if not continuous:
        return search.root_from_output(out)
    return search.sampled_root(rng, out, num_arms=cfg.arms, wide_arms=cfg.wide_arms)


def num_arms(cfg: SearchConfig, *, continuous: bool) -> int:
    """Arms per node of a search over Box actions; 0 for Discrete ones."""
    return cfg.arms if continuous else 0


def make_act(graphdef, cfg: SearchConfig, *, discount: float, greedy: bool,
             continuous: bool = False):
    """act(params, rng, obs [N, *obs_shape], temperature) -> search.PlanOutput, jitted.

    `temperature` is traced, so one compile serves the whole temperature schedule.
    `continuous` searches a Box action space by sampling.
    """
    recurrent_fn = search.model_recurrent_fn(graphdef, discount=discount,
                                             num_arms=num_arms(cfg, continuous=continuous))

    @jax.jit
    def act(params, rng, obs, temperature=1.0):
        root_rng, rng = jax.random.split(rng) if continuous else (None, rng)
        out = world_model.initial_inference(graphdef, params, obs)
        root = search_roots(cfg, root_rng, out, continuous=continuous)
        return search.plan(params, rng, root, recurrent_fn,
                           **plan_kwargs(cfg, greedy=greedy, temperature=temperature,
                                         continuous=continuous))

    return act


class Actor:
    """Acts in N envs with a search: builds the observations, plans, steps the envs.

    The envs hand out single frames; the stacks are built here by the replay's rule
    (`replay.FrameStack`): a segment starts, after any end (a life loss included), with
    its first frame repeated. So what the search sees when acting is what reanalysis
    later rebuilds from the replay.

        plan = actor.plan(params, rng, temperature)   # search on actor.obs
        step, transition = actor.step(plan)           # env step; replay.add's keywords
    """

    def __init__(self, env: VectorEnv, act):
        self.env = env
        self._act = act
        self._stack = replay_lib.FrameStack(env.reset(), env.spec.stack)
        self._starts = np.ones(env.num_envs, bool)  # [N] a segment starts at this step
        self.obs = self._observe()  # [N, *obs_shape] what the next search sees

    @property
    def frames(self) -> np.ndarray:
        """[N, *frame] each env's newest frame."""
        return self._stack.frames[:, -1]

    def _observe(self) -> np.ndarray:
        return replay_lib.merge_stack(self._stack.frames, is_image=self.env.spec.is_image)

    def plan(self, params, rng, temperature) -> search.PlanOutput:
        """The search on `obs`, its actions already on the host (waits for them)."""
        plan = self._act(params, rng, self.obs, temperature)
        return plan.replace(action=np.asarray(plan.action))

    def step(self, plan: search.PlanOutput) -> tuple[Step, dict]:
        """Steps the envs on the plan's actions -> (the env's Step, the transition as
        `replay.add`'s keyword arguments); then moves the stacks on."""
        step = self.env.step(plan.action)
        ends = step.train_terminal | step.terminated | step.truncated  # [N]
        transition = dict(frames=self.frames, actions=plan.action,
                          rewards=step.reward, ends=ends, terminals=step.train_terminal,
                          starts=self._starts, policies=plan.action_weights, arms=plan.arms)
        self._starts = ends
        self._stack.push(step.obs, ends)
        self.obs = self._observe()
        return step, transition
