"""Shared simulated patients for the kinetics calibration and forecast tests."""

from __future__ import annotations

import numpy as np
import pytest

from cartwin.inference import KineticsData, KineticsPrior
from cartwin.models.kinetics import simulate_kinetics

#: A typical sampling schedule after infusion: 20 days with CAR T levels.
SCHEDULE_DAYS = np.array(
    [0, 1, 2, 3, 4, 5, 7, 9, 11, 14, 17, 21, 28, 35, 42, 56, 90, 120, 180, 365.0]
)

#: Lower limit of quantification, copies/ug (order of tisa-cel qPCR assays).
LLOQ = 50.0


def simulate_patient(
    theta: np.ndarray, rng: np.random.Generator, sigma: float = 0.56
) -> KineticsData:
    """Noisy qPCR levels on :data:`SCHEDULE_DAYS`, censored below :data:`LLOQ`."""
    level = simulate_kinetics(theta, SCHEDULE_DAYS)
    observed = level * np.exp(sigma * rng.standard_normal(SCHEDULE_DAYS.size))
    below = observed < LLOQ
    return KineticsData(SCHEDULE_DAYS, np.where(below, LLOQ, observed), below)


@pytest.fixture(scope="session")
def prior() -> KineticsPrior:
    """Stein 2019 qPCR prior, random effects read as variances."""
    return KineticsPrior.from_published("cart_qpcr")


@pytest.fixture(scope="session")
def cohort(prior) -> tuple[np.ndarray, list[KineticsData]]:
    """200 patients with parameters drawn from the prior (seed 2019)."""
    rng = np.random.default_rng(2019)
    truths = prior.mean_theta + prior.sd_theta * rng.standard_normal((200, 6))
    return truths, [simulate_patient(theta, rng) for theta in truths]


@pytest.fixture(scope="session")
def simulate():
    """The :func:`simulate_patient` function."""
    return simulate_patient
