"""One chunk of a trial arm: virtual patients in, one outcome row each out.

:func:`simulate_chunk` is a pure function of (trial, arm, chunk, size, seed):
the runner (:mod:`cartwin.trial.runner`) calls it locally or on Dask workers
and gets the same rows either way. Per chunk it

1. samples the patients (:class:`~cartwin.trial.population.VirtualPopulation`,
   prior means shifted by the population calibration of the trial),
2. solves the arm's protocol for all of them at once
   (:class:`~cartwin.trial.engine.Engine`),
3. turns the summaries into outcomes: CAR T Cmax, Tmax, AUC0-28; CRS and
   ICANS grades drawn from the IL-6 links; response at each protocol visit by
   the Lugano-style rules of :mod:`cartwin.models.response`, best overall
   response, progression-free survival; days of severe neutropenia.

Outcome rules
-------------
- **CRS grade**: ``P(grade >= k)`` from the peak IL-6 signal rise over days
  0-28 (:data:`cartwin.models.cytokines.CRS_LINK`); one uniform draw per
  patient gives the grade (``grade = #{k: u < P(grade >= k)}``).
- **ICANS grade**: the same form with :data:`ICANS_LINK`, fitted here to
  ZUMA-1 neurotoxicity (any 65 %, grade >= 3 31 %; clinical-facts §8) over
  the same 2000 prior-predictive ZUMA-1-like patients as the CRS link
  (``fit_crs_link(zuma1_prior_peaks(2000, 20190101), 0.65, 0.31)``); an
  independent uniform draw. It reads the peak rise of **serum** IL-6, not of
  the receptor-unblocked signal: tocilizumab, which does not cross the
  blood-brain barrier and raises serum IL-6, lowers CRS but not ICANS
  (Neelapu 2018, doi:10.1038/nrclinonc.2017.148). Without tocilizumab the two
  rises are equal, so the fit holds. Assumption: neurotoxicity follows the
  cytokine surge (no blood-brain-barrier model).
- **Response** at each visit of :data:`cartwin.trial.engine.VISIT_DAYS` on
  SPD = ``spd_coef x tumour^(2/3)``: PD when SPD >= 1.5 x the nadir of
  baseline and earlier visits and >= 1 cm2; CR when SPD < 1 cm2; PR when
  SPD <= 50 % of baseline; SD otherwise. Best overall response: the best
  category before the first PD. PFS: the first visit with PD (an event);
  censored at the horizon otherwise. Deaths without progression are not
  modelled, so PFS is progression-free time only.
- **Plausibility**: a patient is implausible (excluded like an ineligible
  one, counted in the report) when the course failed, or CAR T peak outside
  0.1-10^4 cells/µL, or the peak later than day 60 (assumption: the range of
  published blood CAR T peaks after CD19 CAR T, and Tmax of days 7-14).

Only LBCL trials are supported: the MM response (IMWG-style, M-protein at
visits) is not wired into the engine and raises :class:`TrialConfigError`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from cartwin.errors import TrialConfigError
from cartwin.graph.graph import ModelGraph, standard_graph
from cartwin.graph.inputs import typical_schedule
from cartwin.models.cytokines import CRS_LINK, CrsLink, crs_exceedance
from cartwin.trial.engine import VISIT_DAYS, DrugPolicy, Engine, Protocol
from cartwin.trial.population import (
    CALIBRATED_PARAMETERS,
    SENSITIVITY,
    VirtualPopulation,
    calibrate_marrow,
    calibrate_shift,
    check_calibration,
    settings_from,
)

#: ICANS link (module docstring), from ``fit_crs_link`` as stated there.
ICANS_LINK = CrsLink.from_any_and_severe(
    2.1116,
    3.8882,
    scale=0.7171,
    source="fitted to ZUMA-1 neurotoxicity any 65%, grade>=3 31% "
    "(doi:10.1177/2040620719841581) over 2000 prior-predictive patients "
    "(seed 20190101) and P(ICANS | no IL-6 rise) = 5%",
)

#: Plausible CAR T peak (cells/µL) and latest plausible peak day.
PLAUSIBLE_CMAX, LATEST_TMAX = (0.1, 1.0e4), 60.0

#: Default bridging regimen of a calibration cohort that bridged patients.
DEFAULT_BRIDGING_DAYS = (-14.0, -10.0)

#: Patients of the marrow (CAR-HEMATOTOX) calibration pilot.
MARROW_PILOT = 600

#: Most pilots of the population calibration.
PILOT_ROUNDS = 3

#: Most patients per compiled call; smaller chunks are padded to a power of
#: two (>= 64), so a run compiles a few shapes at most.
BATCH = 4096

_ENGINES: dict[tuple, Engine] = {}
_POPULATIONS: dict[str, tuple[VirtualPopulation, dict]] = {}


def trial_graph(trial: Any) -> ModelGraph:
    """The trial's graph: CAR T / tumour + cytokines (+ neutrophils if asked)."""
    if trial.disease != "LBCL":
        raise TrialConfigError(
            f"{trial.source}: trial.disease = {trial.disease!r}: in silico trials "
            "support LBCL only (MM response at visits is not implemented)"
        )
    if "severe_neutropenia_gt14d" in trial.endpoints:
        from cartwin.models.neutrophils import NeutrophilModel

        return standard_graph("LBCL", (NeutrophilModel(),))
    return standard_graph("LBCL")


def arm_protocol(trial: Any, arm: Any, bridging_days=None) -> Protocol:
    """Schedule template (one-cell infusion) and drug policies of an arm."""
    ld = arm.lymphodepletion
    bridging = (
        tuple(arm.bridging.days) if arm.bridging is not None else ()
    ) if bridging_days is None else tuple(bridging_days)
    schedule = typical_schedule(
        1.0, ld_days=tuple(ld.days), bridging_days=bridging
    )
    units = arm.bridging.units_per_day if arm.bridging is not None else 1.0
    schedule = schedule.with_pulses(
        "ld_exposure",
        tuple(replace(p, amount=ld.units_per_day) for p in schedule.of("ld_exposure")),
    ).with_pulses(
        "bridging_exposure",
        tuple(replace(p, amount=units) for p in schedule.of("bridging_exposure")),
    )
    policies = []
    for channel, policy in (
        ("toci_exposure", arm.tocilizumab),
        ("steroid_exposure", arm.steroids),
    ):
        if policy.at_crs_grade:
            level = CRS_LINK.thresholds[int(policy.at_crs_grade) - 1]
            policies.append(DrugPolicy(channel, level, float(policy.doses)))
    return Protocol(schedule, float(trial.horizon_days), tuple(policies), VISIT_DAYS)


def _engine(trial: Any, arm: Any, graph: ModelGraph, bridging_days=None) -> Engine:
    key = (trial.digest(), arm.name, bridging_days)
    if key not in _ENGINES:
        _ENGINES[key] = Engine(graph, arm_protocol(trial, arm, bridging_days))
    return _ENGINES[key]


def _arm(trial: Any, name: str) -> Any:
    for arm in trial.arms:
        if arm.name == name:
            if not arm.simulated:
                raise TrialConfigError(
                    f"{trial.source}: arm {name!r} is an observed arm; it is "
                    "not simulated"
                )
            return arm
    raise TrialConfigError(f"{trial.source}: no arm named {name!r}")


def population(trial: Any) -> tuple[VirtualPopulation, dict[str, Any]]:
    """The trial's calibrated virtual population and its calibration summary.

    Deterministic in the trial (pilot seeded from ``trial.seed``), cached per
    trial digest so that every chunk of a process reuses it.
    """
    key = trial.digest()
    if key not in _POPULATIONS:
        _POPULATIONS[key] = _calibrated(trial)
    return _POPULATIONS[key]


def _calibrated(trial: Any) -> tuple[VirtualPopulation, dict[str, Any]]:
    from cartwin.trial.validation import cohort

    graph = trial_graph(trial)
    settings = settings_from(trial.population, trial.source)
    base = VirtualPopulation(graph, settings)
    if not settings["calibrate"]:
        return base, {"calibrated": False, "settings": settings}
    published = cohort(settings["calibrate_to"], trial.source)
    reference = _arm(trial, trial.reference_arm)
    pilot_settings = {**settings, "bridging_fraction": published["bridging_fraction"]}
    n = int(settings["pilot_patients"])
    days = DEFAULT_BRIDGING_DAYS if published["bridging_fraction"] > 0 else ()
    targets = {k: published[k] for k in ("orr", "cr")}
    shift = dict.fromkeys(CALIBRATED_PARAMETERS, 0.0)
    for round_ in range(PILOT_ROUNDS):
        pilot = VirtualPopulation(graph, pilot_settings, shift)
        rng = np.random.default_rng(
            np.random.SeedSequence(trial.seed, spawn_key=(999, round_))
        )
        frame, cohort_ = _simulate(trial, reference, pilot, n, rng, bridging_days=days)
        features = {
            "orr": frame["best_response"].isin(["CR", "PR"]).to_numpy(),
            "cr": (frame["best_response"] == "CR").to_numpy(),
        }
        centred = cohort_.z.copy()
        for name, value in shift.items():
            centred[:, graph.free_parameter_names.index(name)] -= value
        result = calibrate_shift(centred, features, targets, graph)
        step = result["shift"]
        shift = {k: shift[k] + step[k] for k in shift}
        if max(abs(v) for v in step.values()) < 0.05:
            break
    result["shift"], result["rounds"] = shift, round_ + 1
    check_calibration(result)
    marrow = {}
    if SENSITIVITY in graph.free_parameter_names:
        rng = np.random.default_rng(
            np.random.SeedSequence(trial.seed, spawn_key=(998,))
        )
        pilot = VirtualPopulation(graph, settings).sample(MARROW_PILOT, rng)
        result["marrow"] = calibrate_marrow(graph, pilot)
        marrow = {
            g: (result["marrow"]["shift"][g], result["marrow"]["spread"][g])
            for g in ("low", "high")
        }
    result.update(
        calibrated=True,
        cohort=published["name"],
        protocol=f"arm {reference.name!r}, bridging "
        f"{published['bridging_fraction']:.0%} of patients",
        settings=settings,
    )
    return replace(base, shift=shift, marrow=marrow), result


def check_trial(trial: Any) -> None:
    """Raise :class:`TrialConfigError` now for what the engine would refuse later.

    The disease, the ``[population]`` settings and the published cohorts
    named by ``calibrate_to`` and ``validate_against``: checked before a run
    writes anything.
    """
    from cartwin.trial.validation import cohort

    trial_graph(trial)
    settings = settings_from(trial.population, trial.source)
    if settings["calibrate"]:
        cohort(settings["calibrate_to"], trial.source)
    if trial.validate_against:
        cohort(trial.validate_against, trial.source)


def prime_population(trial: Any, summary: dict[str, Any]) -> None:
    """Install a calibration computed elsewhere (a Dask client) in this process.

    Workers then skip the pilots; the population is rebuilt from the
    summary's settings and shifts, which determine it.
    """
    graph = trial_graph(trial)
    marrow = summary.get("marrow", {})
    virtual = VirtualPopulation(
        graph,
        dict(summary["settings"]),
        dict(summary.get("shift", {})),
        {g: (marrow["shift"][g], marrow["spread"][g]) for g in marrow.get("shift", {})},
    )
    _POPULATIONS[trial.digest()] = (virtual, summary)


def population_summary(trial: Any) -> dict[str, Any]:
    """The calibration summary of the trial's virtual population (JSON-ready)."""
    return population(trial)[1]


def simulate_chunk(
    trial: Any, arm_name: str, chunk: int, size: int, seed: int
) -> pd.DataFrame:
    """Outcome rows of patients ``chunk * size ...`` of an arm (contract columns).

    Parameters
    ----------
    trial : Trial
        The parsed trial file.
    arm_name : str
        A simulated arm.
    chunk, size : int
        Chunk index and number of patients in it.
    seed : int or numpy.random.SeedSequence
        Seed of this chunk (the runner derives it from the trial seed).
    """
    arm = _arm(trial, arm_name)
    virtual, _ = population(trial)
    rng = np.random.default_rng(seed)
    frame, _ = _simulate(trial, arm, virtual, int(size), rng)
    frame.insert(0, "chunk", np.int64(chunk))
    frame.insert(0, "patient", np.arange(size, dtype=np.int64) + chunk * size)
    frame.insert(0, "arm", arm.name)
    return frame


def _simulate(trial, arm, virtual, n, rng, bridging_days=None):
    graph = virtual.graph
    cohort = virtual.sample(n, rng, arm.memory_fraction)
    cov = cohort.covariates
    vectors = np.asarray(graph.natural_from_z(cohort.z))
    dose = arm.dose_for(cov["weight_kg"])
    engine = _engine(trial, arm, graph, bridging_days)
    scales = {"cart_infusion_rate": dose}
    if "bridging_exposure" in engine.inputs.names:
        scales["bridging_exposure"] = cov["bridged"].astype(float)
    summary = _run_padded(
        engine,
        vectors,
        scales,
        {"product_memory_fraction": cov["memory_fraction"]},
        {"body_weight_kg": cov["weight_kg"]},
    )
    uniforms = rng.random((n, 2))
    frame = _outcomes(graph, vectors, cov, dose, summary, uniforms, engine)
    frame["eligible"] = arm.eligibility.mask(frame) & frame["plausible"].to_numpy()
    return frame, cohort


def _run_padded(engine, vectors, scales, constants, covariates):
    # fixed batch shapes: one compiled program per arm, whatever the chunk
    n = vectors.shape[0]
    batch = min(BATCH, max(64, 1 << (n - 1).bit_length()))
    parts = []
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        pad = batch - (stop - start)

        def cut(a, start=start, stop=stop, pad=pad):
            block = np.asarray(a)[start:stop]
            return np.concatenate([block, np.repeat(block[:1], pad, axis=0)])

        out = engine.run(
            cut(vectors),
            {k: cut(v) for k, v in scales.items()},
            {k: cut(v) for k, v in constants.items()},
            {k: cut(v) for k, v in covariates.items()},
        )
        parts.append({k: v[: stop - start] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _grades(rise: np.ndarray, link: CrsLink, u: np.ndarray) -> np.ndarray:
    above = crs_exceedance(np.where(np.isfinite(rise), rise, -50.0), link)
    return np.sum(u[:, None] < above, axis=1).astype(np.int64)


def _outcomes(graph, vectors, cov, dose, s, uniforms, engine) -> pd.DataFrame:
    names = graph.parameter_names
    spd_coef = vectors[:, names.index("cart_tumour.spd_coef")]
    ldh = vectors[:, names.index("cart_tumour.ldh_base")] + vectors[
        :, names.index("cart_tumour.ldh_per_tumour")
    ] * cov["tumour0"]
    spd0 = spd_coef * np.maximum(s["tumour0"], 0.0) ** (2.0 / 3.0)
    spd = spd_coef[:, None] * np.maximum(s["visits"], 0.0) ** (2.0 / 3.0)
    categories, first_pd = lugano_at_visits(spd0, spd)
    visits = np.asarray(engine.protocol.visits)
    best = best_response(categories, first_pd)
    progressed = first_pd < len(visits)
    pfs = np.where(
        progressed, visits[np.minimum(first_pd, len(visits) - 1)],
        engine.protocol.horizon_days,
    )
    days = {p.channel: s["drug_day"][:, i] for i, p in enumerate(engine.protocol.policies)}
    cmax = s["cmax"]
    plausible = (
        s["ok"] & (cmax >= PLAUSIBLE_CMAX[0]) & (cmax <= PLAUSIBLE_CMAX[1])
        & (s["tmax"] <= LATEST_TMAX)
    )
    qpcr = vectors[:, names.index("cart_tumour.qpcr_per_cell")]
    return pd.DataFrame(
        {
            "weight": 1.0,
            "solve_ok": s["ok"],
            "adaptive_solve": s["adaptive"],
            "plausible": plausible,
            "age": cov["age"],
            "sex": cov["sex"],
            "prior_lines": cov["prior_lines"],
            "bridged": cov["bridged"],
            "weight_kg": cov["weight_kg"],
            "tumour0": cov["tumour0"],
            "spd0_cm2": spd0,
            "ldh0_u_l": ldh,
            "hematotox": cov["hematotox"],
            "memory_fraction": cov["memory_fraction"],
            "dose_cells": dose,
            "cmax_per_ul": cmax,
            "tmax_day": s["tmax"],
            "auc0_28": s["auc"],
            "cmax_copies_ug": qpcr * cmax,
            "il6_log_rise": s["il6_rise"],
            "il6_serum_log_rise": s["il6_serum_rise"],
            "crs_grade": _grades(s["il6_rise"], CRS_LINK, uniforms[:, 0]),
            "icans_grade": _grades(s["il6_serum_rise"], ICANS_LINK, uniforms[:, 1]),
            "toci_day": _day(days.get("toci_exposure"), len(cmax)),
            "steroid_day": _day(days.get("steroid_exposure"), len(cmax)),
            "anc_days_below_500": s["anc_low"],
            "response_d28": categories[:, list(visits).index(28.0)],
            "response_d90": categories[:, list(visits).index(90.0)],
            "best_response": best,
            "pfs_days": pfs.astype(float),
            "pfs_event": progressed,
        }
    )


def _day(values, n) -> np.ndarray:
    if values is None:
        return np.full(n, np.nan)
    return np.where(np.isfinite(values), values, np.nan)


def lugano_at_visits(spd0: np.ndarray, spd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lugano-style category at each visit, and the index of the first PD.

    ``spd0`` (patients) is the baseline SPD, ``spd`` (patients x visits) the
    SPD at the visits; thresholds of :class:`cartwin.models.response.LuganoStyle`.
    Visits after the first PD keep their own category but do not count.
    """
    from cartwin.models.response import LuganoStyle

    rules = LuganoStyle()
    history = np.concatenate([spd0[:, None], spd], axis=1)
    nadir = np.minimum.accumulate(history, axis=1)[:, :-1]
    progressed = (spd >= (1.0 + rules.pd_increase) * nadir) & (spd >= rules.cr_spd_cm2)
    out = np.where(spd <= (1.0 - rules.pr_decrease) * spd0[:, None], "PR", "SD")
    out = np.where(spd < rules.cr_spd_cm2, "CR", out)
    out = np.where(progressed, "PD", out).astype(object)
    first = np.where(progressed.any(axis=1), progressed.argmax(axis=1), spd.shape[1])
    return out, first


def best_response(categories: np.ndarray, first_pd: np.ndarray) -> np.ndarray:
    """Best category before the first PD (PD when the first visit shows PD)."""
    order = {"CR": 0, "PR": 1, "SD": 2, "PD": 3}
    rank = np.vectorize(order.__getitem__, otypes=[np.int64])(categories)
    before = np.arange(categories.shape[1])[None, :] < first_pd[:, None]
    best = np.min(np.where(before, rank, 3), axis=1)
    return np.array(["CR", "PR", "SD", "PD"], dtype=object)[best]


__all__ = [
    "ICANS_LINK",
    "arm_protocol",
    "best_response",
    "lugano_at_visits",
    "population",
    "simulate_chunk",
    "trial_graph",
]
