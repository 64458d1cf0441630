"""Build and update a patient's twin: calibrate, forecast, score, version.

:func:`build_twin` is the one place where the layers meet: it reads a
:class:`~cartwin.record.model.PatientRecord`, calibrates the CAR T kinetics
model to it (MAP, then a Laplace posterior), forecasts with a 90 % interval,
computes the baseline scores and the ASTCT CRS and ICANS grade timelines, lays
out the journey, and returns a new immutable
:class:`~cartwin.twin.version.TwinVersion`. Nothing here special-cases a
patient: zero CAR T observations give a prior forecast, a missing infusion gives
outputs that say why they are missing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Sequence

from cartwin import __version__
from cartwin.errors import CalibrationError, CartwinError
from cartwin.record.hashing import record_hash
from cartwin.record.model import PatientRecord
from cartwin.twin.journey import journey_phases
from cartwin.twin.version import TwinVersion

logger = logging.getLogger(__name__)

#: Identifier of the model graph a twin version of this release uses.
MODEL_NAME = "cartwin-kinetics-scores"
#: Version of that model graph; bump when equations, priors or rules change.
MODEL_VERSION = "1"


@dataclass(frozen=True)
class TwinSettings:
    """Settings that determine a twin version; all are recorded in it.

    Attributes
    ----------
    interval : float
        Central probability of forecast intervals (0.9 gives 5th-95th percentile).
    n_draws : int
        Posterior draws used for forecast intervals.
    seed : int
        Seed of the draws; the same data, model and seed give the same version.
    t_end_days : float
        Forecast horizon in days since infusion.
    graph : bool
        Also calibrate the multi-scale model graph and store its forecast,
        scenario comparison and identifiability in ``outputs["graph"]``
        (:mod:`cartwin.twin.graph_outputs`). Off by default: the calibration
        takes seconds to tens of seconds per patient and the first build in a
        process compiles the graph (about 20 s on a CPU), too slow for
        ``cartwin demo`` and routine updates.
    fates : tuple of (str, float)
        The CAR T product's T-cell fate distribution (fate -> fraction, e.g.
        ``PatientFates.as_dict()`` of :func:`cartwin.logic.personalise`; a
        mapping is accepted). When given (needs ``graph=True``) the graph is
        calibrated through the fate link
        (:func:`cartwin.graph.fates_link.calibrate_with_fates`): it sets the
        product memory fraction and the ``k_exp`` prior, and
        ``outputs["graph"]["fate_link"]`` says how. Empty: no link.
    fates_n_cells : int
        Cells the fates were personalised from (0: unknown), for the report.
    """

    interval: float = 0.9
    n_draws: int = 1000
    seed: int = 20240101
    t_end_days: float = 365.0
    graph: bool = False
    fates: tuple[tuple[str, float], ...] = ()
    fates_n_cells: int = 0

    def __post_init__(self) -> None:
        # a mapping, or [name, value] pairs read back from JSON, as pairs
        pairs = self.fates.items() if isinstance(self.fates, Mapping) else self.fates
        object.__setattr__(self, "fates", tuple((str(k), float(v)) for k, v in pairs))
        if self.fates and not self.graph:
            raise ValueError("fates set the model graph's priors: they need graph=True")
        if self.fates_n_cells < 0:
            raise ValueError(f"fates_n_cells must be >= 0, got {self.fates_n_cells}")
        if not 0.0 < self.interval < 1.0:
            raise ValueError(f"interval must be in (0, 1), got {self.interval}")
        if self.n_draws < 10:
            raise ValueError(f"n_draws must be at least 10, got {self.n_draws}")
        if self.t_end_days <= 0:
            raise ValueError(f"t_end_days must be positive, got {self.t_end_days}")


def build_twin(
    record: PatientRecord,
    *,
    settings: TwinSettings | None = None,
    parent: TwinVersion | None = None,
    now: dt.datetime | None = None,
) -> TwinVersion:
    """Calibrate and forecast one patient's twin and return the new version.

    Parameters
    ----------
    record : PatientRecord
        All data of the patient.
    settings : TwinSettings, optional
        Defaults to :class:`TwinSettings()`.
    parent : TwinVersion, optional
        The version this one updates (recorded as ``parent_id``).
    now : datetime, optional
        Creation instant (UTC); defaults to the current time.

    Returns
    -------
    TwinVersion
        Immutable result; store it with ``TwinStore.save_twin_version``.
    """
    settings = settings or TwinSettings()
    created = now or dt.datetime.now(dt.timezone.utc)
    try:
        kinetics, parameters, posterior = _kinetics_outputs(record, settings)
    except CartwinError as exc:
        reason = f"kinetics could not be calibrated: {exc}"
        kinetics, parameters = {"status": "unavailable", "reason": reason}, {}
        posterior = {"status": "unavailable", "reason": reason}
    outputs = {
        "kinetics": kinetics,
        "scores": _guard(lambda: _score_outputs(record), []),
        "crs": _guard(lambda: _grade_outputs(record, "crs"), {}),
        "icans": _guard(lambda: _grade_outputs(record, "icans"), {}),
        "journey": _guard(lambda: journey_phases(record), []),
    }
    if settings.graph:
        outputs["graph"] = _guard(lambda: _graph_output(record, settings), {})
    return TwinVersion(
        pseudonym=record.facts.pseudonym,
        created_at=created,
        data_hash=record_hash(record),
        model_name=MODEL_NAME,
        model_version=MODEL_VERSION,
        package_version=__version__,
        settings=recorded_settings(settings),
        parameters=parameters,
        posterior=posterior,
        outputs=outputs,
        parent_id=None if parent is None else parent.version_id,
    )


def _guard(compute, empty):
    """Run one output; data it cannot use give an output that says why.

    A twin version is still made when one layer cannot use the data (an
    implausible value, a rule's precondition): that layer's output carries
    ``status: unavailable`` and the reason, the others are unaffected.
    """
    try:
        return compute()
    except CartwinError as exc:
        logger.warning("twin output unavailable: %s", exc)
        if isinstance(empty, list):
            return [{"name": "unavailable", "value": None, "message": str(exc)}]
        return {"status": "unavailable", "reason": str(exc), "message": str(exc)}


def build_twins(
    records: Sequence[PatientRecord],
    *,
    settings: TwinSettings | None = None,
    parents: Sequence[TwinVersion | None] | None = None,
) -> list[TwinVersion]:
    """Build twins of several patients (one after another, each independent)."""
    parents = parents or [None] * len(records)
    return [
        build_twin(record, settings=settings, parent=parent)
        for record, parent in zip(records, parents, strict=True)
    ]


def _kinetics_outputs(
    record: PatientRecord, settings: TwinSettings
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    from cartwin import inference as kinetics

    if record.infusion_time is None:
        reason = "no CAR T infusion in the record, so there is no day 0 to model from"
        return {"status": "unavailable", "reason": reason}, {}, {"status": "unavailable"}
    data = kinetics.kinetics_data_from_record(record)
    prior = kinetics.KineticsPrior.from_published(data.assay)
    fit = kinetics.fit_kinetics(data, prior)
    forecast = kinetics.forecast_kinetics(
        fit,
        prior,
        t_end_days=settings.t_end_days,
        n_draws=settings.n_draws,
        seed=settings.seed,
        interval=settings.interval,
    )
    summary = kinetics.kinetics_summary(fit, forecast, prior)
    posterior = {
        "method": "laplace" if fit.status != "prior_only" else "prior",
        "status": fit.status,
        "reason": fit.reason,
        "param_names": list(fit.param_names),
        "mean": [float(x) for x in fit.map_theta],
        "cov": [[float(x) for x in row] for row in fit.cov_theta],
    }
    return summary, summary.get("parameters", {}), posterior


def recorded_settings(settings: TwinSettings) -> dict[str, Any]:
    # ``graph`` and the fates are recorded only when on, so versions built
    # without them keep the settings (and content ids) of earlier releases
    recorded = dataclasses.asdict(settings)
    if not recorded["graph"]:
        del recorded["graph"]
    if not recorded["fates"]:
        del recorded["fates"], recorded["fates_n_cells"]
    return recorded


def _graph_output(record: PatientRecord, settings: TwinSettings) -> dict[str, Any]:
    """``outputs["graph"]``; any failure of the graph becomes a CalibrationError.

    The numerical stack (JAX, diffrax) can raise errors that are not
    cartwin's; they are re-raised as :class:`CalibrationError` so that
    :func:`_guard` records them and the rest of the version is kept.
    """
    from cartwin.twin.graph_outputs import graph_outputs

    try:
        return graph_outputs(
            record,
            seed=settings.seed,
            interval=settings.interval,
            t_end_days=settings.t_end_days,
            fate_link=_fate_link(settings),
        )
    except CartwinError:
        raise
    except Exception as exc:  # a graph failure must never break the version
        raise CalibrationError(
            f"model graph of {record.facts.pseudonym}: {type(exc).__name__}: {exc}"
        ) from exc


def _fate_link(settings: TwinSettings) -> Any:
    """The :class:`~cartwin.graph.fates_link.FateLink` of ``settings.fates``."""
    if not settings.fates:
        return None
    from cartwin.graph.fates_link import fates_to_inputs

    n_cells = settings.fates_n_cells or None
    return fates_to_inputs(dict(settings.fates), n_cells=n_cells)


def _score_outputs(record: PatientRecord) -> list[dict[str, Any]]:
    from cartwin.scores import baseline_scores

    return [score.to_dict() for score in baseline_scores(record)]


def _grade_outputs(record: PatientRecord, which: str) -> dict[str, Any]:
    from cartwin import scores

    timeline = scores.crs_timeline if which == "crs" else scores.icans_timeline
    return timeline(record).to_dict()
