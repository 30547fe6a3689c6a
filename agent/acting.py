"""Acting with search: the one place search knobs become `search.plan` arguments."""

from __future__ import annotations

import jax

import search
from agent.config import SearchConfig


def plan_kwargs(cfg: SearchConfig, *, greedy: bool, temperature: float = 1.0) -> dict:
    """Keyword arguments of `search.plan`; `greedy` drops all exploration (evaluation)."""
    kwargs = dict(num_simulations=cfg.num_simulations, kind=cfg.kind,
                  qtransform=cfg.qtransform, min_q_range=cfg.min_q_range)
    if cfg.kind == "gumbel":
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


def make_act(graphdef, cfg: SearchConfig, *, discount: float, greedy: bool):
    """act(params, rng, obs [N, *obs_shape], temperature) -> search.PlanOutput, jitted.

    `temperature` is traced, so one compile serves the whole temperature schedule.
    """
    recurrent_fn = search.model_recurrent_fn(graphdef, discount=discount)

    @jax.jit
    def act(params, rng, obs, temperature=1.0):
        root = search.model_root(graphdef, params, obs)
        return search.plan(params, rng, root, recurrent_fn,
                           **plan_kwargs(cfg, greedy=greedy, temperature=temperature))

    return act
