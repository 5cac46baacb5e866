"""Seeing what a model does: predictions drawn next to the ground truth, contact sheets
that put several checkpoints side by side (``predictions``), and FRN's learned parameters
as training scalars for TensorBoard (``frn_stats``).

``tools/visualize.py`` is the command line of ``predictions``.
"""

from .frn_stats import FRNStatsHook, frn_parameter_stats
from .predictions import (
    Checkpoint,
    Predictor,
    Sample,
    VisualizeError,
    checkpoint_config,
    checkpoint_from_run,
    contact_sheet,
    dataset_samples,
    draw_ground_truth,
    draw_predictions,
    folder_samples,
    side_by_side,
    visualize,
)

__all__ = [
    "Checkpoint",
    "FRNStatsHook",
    "Predictor",
    "Sample",
    "VisualizeError",
    "checkpoint_config",
    "checkpoint_from_run",
    "contact_sheet",
    "dataset_samples",
    "draw_ground_truth",
    "draw_predictions",
    "folder_samples",
    "frn_parameter_stats",
    "side_by_side",
    "visualize",
]
