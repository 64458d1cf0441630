"""Scale models of the twin; one module per model family.

Importing this package enables float64 in JAX (see :mod:`cartwin._jax`).
"""

from __future__ import annotations

from cartwin.models.kinetics import (
    ASSAY_UNITS,
    PARAM_NAMES,
    KineticsPrior,
    derived_kinetics,
    kinetics_curve,
    log_kinetics,
    param_units,
    simulate_kinetics,
    to_natural,
    to_theta,
)

__all__ = [
    "ASSAY_UNITS",
    "PARAM_NAMES",
    "KineticsPrior",
    "derived_kinetics",
    "kinetics_curve",
    "log_kinetics",
    "param_units",
    "simulate_kinetics",
    "to_natural",
    "to_theta",
]
