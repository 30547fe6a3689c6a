"""Tree search over the learned model (an mctx adapter)."""

from search.planner import (
    PlanOutput,
    SampledEmbedding,
    model_recurrent_fn,
    model_root,
    plan,
    root_from_output,
    sampled_root,
)
from search.qtransforms import qtransform_by_tree_min_max, qtransform_completed_by_tree_min_max

__all__ = [
    "PlanOutput",
    "SampledEmbedding",
    "model_recurrent_fn",
    "model_root",
    "plan",
    "root_from_output",
    "sampled_root",
    "qtransform_by_tree_min_max",
    "qtransform_completed_by_tree_min_max",
]
