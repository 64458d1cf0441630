"""Calibration and forecasting: priors, censored likelihoods, MAP/Laplace.

The CAR T kinetics twin: :func:`fit_kinetics` (one patient),
:func:`fit_kinetics_batch` (many, vectorised), :func:`forecast_kinetics`
(curve to day 365 with 90% intervals) and :func:`kinetics_summary` (the
JSON-ready ``outputs["kinetics"]`` entry of a twin version).
"""

from __future__ import annotations

from cartwin.inference.calibration import (
    STATUSES,
    FitSettings,
    KineticsFit,
    fit_kinetics,
    fit_kinetics_batch,
)
from cartwin.inference.data import KineticsData, kinetics_data_from_record
from cartwin.inference.forecast import (
    Interval,
    KineticsForecast,
    default_grid,
    forecast_kinetics,
    kinetics_summary,
)
from cartwin.inference.likelihood import censored_log_likelihood, neg_log_posterior
from cartwin.models.kinetics import KineticsPrior

__all__ = [
    "STATUSES",
    "FitSettings",
    "Interval",
    "KineticsData",
    "KineticsFit",
    "KineticsForecast",
    "KineticsPrior",
    "censored_log_likelihood",
    "default_grid",
    "fit_kinetics",
    "fit_kinetics_batch",
    "forecast_kinetics",
    "kinetics_data_from_record",
    "kinetics_summary",
    "neg_log_posterior",
]
