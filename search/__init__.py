"""Tree search over the learned model (an mctx adapter)."""

from search.planner import PlanOutput, model_recurrent_fn, model_root, plan, root_from_output
from search.qtransforms import qtransform_by_tree_min_max, qtransform_completed_by_tree_min_max

__all__ = [
    "PlanOutput",
    "model_recurrent_fn",
    "model_root",
    "plan",
    "root_from_output",
    "qtransform_by_tree_min_max",
    "qtransform_completed_by_tree_min_max",
]
