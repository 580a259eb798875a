"""Names of the reference metrics written beside a run's own (torch-free: ``eqgeo-leaderboard`` reads them).

A property run's test metrics hold, beside each ``<target>_mae`` / ``<target>_rmse``, the errors of predicting
the training mean for every test graph, ``<target>_mean_predictor_mae`` / ``_rmse``
(:class:`eqgeo.training.PropertyTask`): the number a trained model's error is read against.
"""

from __future__ import annotations

__all__ = ["MEAN_PREDICTOR", "mean_predictor_name", "is_mean_predictor"]

#: The suffix that marks a target's mean-predictor metrics (``gap_mean_predictor_mae``).
MEAN_PREDICTOR = "_mean_predictor"


def mean_predictor_name(metric: str) -> str:
    """``gap_mae`` -> ``gap_mean_predictor_mae`` (the metric's kind, after its last ``_``, stays last)."""
    name, kind = metric.rsplit("_", 1)
    return f"{name}{MEAN_PREDICTOR}_{kind}"


def is_mean_predictor(name: str) -> bool:
    """Whether ``name`` (a metric, ``gap_mean_predictor_mae``, or its target part, ``gap_mean_predictor``) names
    a mean predictor's errors rather than a model's."""
    return name.endswith(MEAN_PREDICTOR) or f"{MEAN_PREDICTOR}_" in name
