"""Stand-ins for the trial engine, for the runner and CLI tests.

:func:`fake_simulate` has the signature of
``cartwin.trial.simulate.simulate_chunk`` and returns every column of the
per-patient outcome table of the trial contract, drawn with numpy from the
chunk seed only, so it is deterministic and cheap. It lives in its own module
(unique basename) so that Dask worker processes can import it by name.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cartwin.trial.config import Trial, parse_trial

_RESPONSES = np.array(["CR", "PR", "SD", "PD"])


def trial_data(patients: int = 30, seed: int = 7) -> dict:
    """A small trial: two simulated arms and one observed (synthetic control) arm."""
    ld = {"regimen": "flu/cy", "days": [-5, -4, -3], "units_per_day": 1.0}
    return {
        "trial": {
            "name": "runner test",
            "disease": "LBCL",
            "seed": seed,
            "patients_per_arm": patients,
            "reference_arm": "axi-cel",
        },
        "arm": [
            {
                "name": "axi-cel",
                "product": "axi-cel",
                "dose_cells_per_kg": 2.0e6,
                "lymphodepletion": ld,
            },
            {
                "name": "published control",
                "observed": {"n": 101, "orr": 0.82, "cr": 0.58, "crs_ge3": 0.13},
            },
            {
                "name": "low dose",
                "product": "axi-cel",
                "dose_cells_per_kg": 1.0e6,
                "lymphodepletion": ld,
                "tocilizumab": {"at_crs_grade": 1},
            },
        ],
    }


def make_trial(patients: int = 30, seed: int = 7) -> Trial:
    """:func:`trial_data` parsed by the real trial-file checker."""
    return parse_trial(trial_data(patients, seed), source="trial_fakes.py")


def fake_simulate(
    trial, arm_name: str, chunk: int, size: int, seed: int
) -> pd.DataFrame:
    """Outcome rows of one chunk, deterministic in ``seed`` (plausible, no model)."""
    rng = np.random.default_rng(seed)
    best = rng.choice(_RESPONSES, size=size, p=[0.55, 0.25, 0.1, 0.1])
    crs = rng.choice(5, size=size, p=[0.1, 0.5, 0.27, 0.1, 0.03]).astype(np.int64)
    pfs = rng.exponential(400.0, size)
    return pd.DataFrame(
        {
            "arm": arm_name,
            "patient": np.arange(size, dtype=np.int64),  # renumbered by the runner
            "chunk": np.int64(chunk),
            "weight": 1.0,
            "eligible": rng.random(size) < 0.95,
            "solve_ok": np.ones(size, dtype=bool),
            "age": rng.normal(58.0, 10.0, size),
            "sex": rng.choice(["F", "M"], size=size),
            "prior_lines": rng.integers(2, 6, size, dtype=np.int64),
            "bridged": np.zeros(size, dtype=bool),
            "weight_kg": rng.normal(80.0, 12.0, size),
            "tumour0": rng.lognormal(3.0, 1.0, size),
            "spd0_cm2": rng.lognormal(3.5, 0.8, size),
            "ldh0_u_l": rng.lognormal(5.6, 0.4, size),
            "hematotox": rng.integers(0, 8, size, dtype=np.int64),
            "memory_fraction": 0.3,
            "dose_cells": rng.normal(1.6e8, 2e7, size),
            "cmax_per_ul": rng.lognormal(3.5, 1.0, size),
            "tmax_day": rng.uniform(7.0, 14.0, size),
            "auc0_28": rng.lognormal(6.0, 1.0, size),
            "cmax_copies_ug": rng.lognormal(10.0, 1.0, size),
            "il6_log_rise": rng.normal(2.0, 1.0, size),
            "crs_grade": crs,
            "icans_grade": rng.choice(5, size=size, p=[0.4, 0.2, 0.1, 0.2, 0.1]).astype(
                np.int64
            ),
            "toci_day": np.where(crs >= 2, rng.uniform(1.0, 5.0, size), np.nan),
            "steroid_day": np.where(crs >= 3, rng.uniform(2.0, 7.0, size), np.nan),
            "anc_days_below_500": rng.uniform(0.0, 30.0, size),
            "response_d28": best,
            "response_d90": np.where(best == "CR", "CR", "PD"),
            "best_response": best,
            "pfs_days": np.minimum(pfs, 365.0),
            "pfs_event": pfs < 365.0,
        }
    )


class CountingSimulate:
    """:func:`fake_simulate` that records the (arm, chunk) of every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, trial, arm_name, chunk, size, seed) -> pd.DataFrame:
        self.calls.append((arm_name, chunk))
        return fake_simulate(trial, arm_name, chunk, size, seed)


def failing_simulate(trial, arm_name, chunk, size, seed) -> pd.DataFrame:
    """Fails on chunk 1 of every arm (an interrupted run)."""
    if chunk == 1:
        raise RuntimeError("simulated crash")
    return fake_simulate(trial, arm_name, chunk, size, seed)
