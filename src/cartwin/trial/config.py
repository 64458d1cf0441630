"""Trial files: arms, treatment policies, endpoints of an in silico trial.

A trial file is TOML (``.toml``, read with :mod:`tomllib`) or YAML
(``.yaml``/``.yml``, read with PyYAML's safe loader) with the same structure::

    [trial]                 name, disease ("LBCL" | "MM"), patients_per_arm,
                            seed, horizon_days, reference_arm, alpha, power,
                            validate_against
    [population]            free-form overrides for the virtual population
    [[arm]]                 a simulated arm (product, dose, policies) or an
                            observed arm (``observed = {n, orr, ...}``)
    [[endpoint]]            name = one of ENDPOINTS (default: all of them)

The shipped example, ``cartwin/data/examples/trial_zuma1.toml``
(:func:`example_trial_path`), documents every key in comments. Parsing and the
typed, checked access to each table live in :mod:`cartwin.trial._trialfile`.

Units of the treatment keys are those of the exogenous input channels of the
model graph (``cartwin.graph.inputs.CHANNELS``):

* ``dose_cells_per_kg`` (CAR T cells per kg body weight) or ``dose_cells``
  (total CAR T cells), exactly one per simulated arm, > 0.
* ``lymphodepletion.units_per_day``: one unit is one day of fludarabine
  30 mg/m2 + cyclophosphamide 500 mg/m2, or one day of bendamustine 90 mg/m2
  (``cartwin.graph.inputs.LD_REFERENCE``, channel ``ld_exposure``). Instead
  of units a file may give ``fludarabine_mg_m2`` and ``cyclophosphamide_mg_m2``
  (regimen ``"flu/cy"``) or ``bendamustine_mg_m2`` (regimen
  ``"bendamustine"``); they are converted with the same reference doses.
  Defaults: ``"flu/cy"`` on days -5, -4, -3 at 1 unit a day (ZUMA-1);
  ``"bendamustine"`` on days -4, -3 at 1 unit a day (90 mg/m2 for two days,
  as in JULIET); ``"none"`` for no lymphodepletion.
* ``bridging.units_per_day``: one unit is one bridging agent given
  (channel ``bridging_exposure``).
* ``tocilizumab.doses``: one unit is one 8 mg/kg dose (``toci_exposure``).
* ``steroids.dexamethasone_mg``: milligrams of dexamethasone (or its
  equivalent) per administration, stored as units of 10 mg
  (``steroid_exposure``; equivalence after Liu 2013 [1]_).
* ``at_crs_grade``: the ASTCT CRS grade (1-4) at which the drug is given
  (clinical-facts §4.1, Lee 2019 [2]_); 0 or a missing table means never.

Every problem raises :class:`~cartwin.errors.TrialConfigError` naming the
file, the field path (``arm[1].tocilizumab.at_crs_grade``; arms and endpoints
are counted from 0 in the order of the file) and the offending value.

References
----------
.. [1] Liu D, Ahmet A, Ward L, et al. A practical guide to the monitoring and
   management of the complications of systemic corticosteroid therapy.
   Allergy Asthma Clin Immunol 2013;9(1):30. doi:10.1186/1710-1492-9-30
.. [2] Lee DW, Santomasso BD, Locke FL, et al. ASTCT consensus grading for
   cytokine release syndrome and neurologic toxicity associated with immune
   effector cells. Biol Blood Marrow Transplant 2019;25(4):625-638.
   doi:10.1016/j.bbmt.2018.12.758
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cartwin.errors import DataError, TrialConfigError
from cartwin.graph.inputs import LD_REFERENCE
from cartwin.trial._trialfile import MISSING, Table, read_document

#: Endpoint names a trial can report (see :mod:`cartwin.trial.endpoints`).
ENDPOINTS = (
    "orr",
    "cr",
    "cr_m3",
    "crs_ge3",
    "crs_any",
    "icans_ge3",
    "icans_any",
    "severe_neutropenia_gt14d",
    "pfs",
)

#: Endpoints that are proportions (all but PFS); an observed arm may give them.
PROPORTION_ENDPOINTS = tuple(e for e in ENDPOINTS if e != "pfs")

#: Diseases a trial can simulate.
DISEASES = ("LBCL", "MM")

#: Shortest horizon, days: day-90 response (``cr_m3``) must be inside it.
MIN_HORIZON_DAYS = 90.0

#: Longest follow-up a trial file may ask for, days (10 years): the step
#: grid, and so memory and time per patient, grow with the horizon.
MAX_HORIZON_DAYS = 3652.5

#: Most virtual patients per arm: the runner joins all chunks of a run in
#: memory at the end (about 0.5 KiB per patient).
MAX_PATIENTS_PER_ARM = 10_000_000

#: Largest CAR T doses accepted: 10^9 cells/kg or 10^12 cells in total, about
#: 500 times the labelled axi-cel dose (2 x 10^6/kg, at most 2 x 10^8).
MAX_DOSE_CELLS_PER_KG, MAX_DOSE_CELLS = 1.0e9, 1.0e12

#: Default regimen days (days since infusion) and units a day.
LD_DEFAULTS: dict[str, tuple[tuple[float, ...], float]] = {
    "flu/cy": ((-5.0, -4.0, -3.0), 1.0),
    "bendamustine": ((-4.0, -3.0), 1.0),
    "none": ((), 0.0),
}

#: Milligrams of dexamethasone in one ``steroid_exposure`` unit.
DEXAMETHASONE_MG_PER_UNIT = 10.0

#: Memory share of a product whose composition is not given (as inputs.py).
DEFAULT_MEMORY_FRACTION = 0.3

EXAMPLE_TRIAL = "trial_zuma1.toml"

_ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._+()-]{0,63}")


# -- value objects --------------------------------------------------------------


@dataclass(frozen=True)
class Lymphodepletion:
    """Lymphodepleting chemotherapy before infusion.

    Attributes
    ----------
    regimen : str
        ``"flu/cy"``, ``"bendamustine"`` or ``"none"``.
    days : tuple of float
        Administration days, days since infusion (< 0).
    units_per_day : float
        ``ld_exposure`` units a day (1 = fludarabine 30 mg/m2 + cyclophosphamide
        500 mg/m2, or bendamustine 90 mg/m2), >= 0.
    """

    regimen: str = "flu/cy"
    days: tuple[float, ...] = (-5.0, -4.0, -3.0)
    units_per_day: float = 1.0


@dataclass(frozen=True)
class Bridging:
    """Bridging therapy between leukapheresis and lymphodepletion.

    Attributes
    ----------
    days : tuple of float
        Administration days, days since infusion (< 0).
    units_per_day : float
        ``bridging_exposure`` units a day (1 = one agent given), >= 0.

    Notes
    -----
    Who receives it is the population's ``bridged`` flag (population.py); the
    arm only says what it is.
    """

    days: tuple[float, ...]
    units_per_day: float = 1.0


@dataclass(frozen=True)
class Eligibility:
    """Inclusion rules applied to virtual patients; None means no rule.

    Attributes
    ----------
    max_hematotox : int or None
        Highest CAR-HEMATOTOX score (0-7) admitted.
    min_age, max_age : float or None
        Age limits, years (inclusive).
    max_prior_lines : int or None
        Most prior lines of therapy admitted.
    """

    max_hematotox: int | None = None
    min_age: float | None = None
    max_age: float | None = None
    max_prior_lines: int | None = None

    def mask(self, frame: pd.DataFrame) -> np.ndarray:
        """Which rows of an outcome table meet every rule.

        Parameters
        ----------
        frame : pandas.DataFrame
            Needs the columns a set rule reads: ``age`` (years),
            ``hematotox`` (points), ``prior_lines``.

        Returns
        -------
        numpy.ndarray of bool
            One per row; a missing (NaN) value fails the rule that reads it.

        Raises
        ------
        DataError
            When a rule's column is not in ``frame``.
        """
        keep = np.ones(len(frame), dtype=bool)
        rules = (
            ("hematotox", self.max_hematotox, np.less_equal),
            ("age", self.min_age, np.greater_equal),
            ("age", self.max_age, np.less_equal),
            ("prior_lines", self.max_prior_lines, np.less_equal),
        )
        for column, limit, compare in rules:
            if limit is None:
                continue
            if column not in frame.columns:
                raise DataError(
                    f"eligibility rule on {column!r} needs that column; the "
                    f"outcome table has {sorted(frame.columns)}"
                )
            values = frame[column].to_numpy(dtype=float, na_value=np.nan)
            with np.errstate(invalid="ignore"):
                keep &= compare(values, limit)
        return keep


@dataclass(frozen=True)
class DrugPolicy:
    """When a rescue drug is given during CRS, and how much.

    Attributes
    ----------
    at_crs_grade : int or None
        ASTCT CRS grade (1-4) that triggers the drug; None: never.
    doses : float
        Units per administration: tocilizumab 8 mg/kg doses, or steroids in
        units of 10 mg dexamethasone equivalent; >= 0.
    """

    at_crs_grade: int | None = None
    doses: float = 1.0

    @property
    def given(self) -> bool:
        """Whether the drug is ever given."""
        return self.at_crs_grade is not None


@dataclass(frozen=True)
class Arm:
    """One arm: a simulated treatment, or an observed (published) cohort.

    Attributes
    ----------
    name : str
        Unique label (letters, digits, space, ``._+()-``; up to 64 characters).
    product : str
        CAR T product (e.g. ``"axi-cel"``); empty for an observed arm.
    dose_cells, dose_cells_per_kg : float or None
        Total CAR T cells, or cells per kg body weight (exactly one set for a
        simulated arm).
    memory_fraction : float
        Memory share of the product, 0..1.
    lymphodepletion : Lymphodepletion
    bridging : Bridging or None
    eligibility : Eligibility
    tocilizumab, steroids : DrugPolicy
    observed : dict or None
        For an observed arm: ``n`` (patients) and published proportions
        (0..1) keyed by endpoint name.
    """

    name: str
    product: str = ""
    dose_cells: float | None = None
    dose_cells_per_kg: float | None = None
    memory_fraction: float = DEFAULT_MEMORY_FRACTION
    lymphodepletion: Lymphodepletion = Lymphodepletion()
    bridging: Bridging | None = None
    eligibility: Eligibility = Eligibility()
    tocilizumab: DrugPolicy = DrugPolicy()
    steroids: DrugPolicy = DrugPolicy()
    observed: dict[str, float] | None = None

    @property
    def simulated(self) -> bool:
        """True for a simulated arm, False for an observed one."""
        return self.observed is None

    def dose_for(self, weight_kg: np.ndarray) -> np.ndarray:
        """Total CAR T cells infused to patients of the given body weights.

        Parameters
        ----------
        weight_kg : array_like
            Body weight, kg (> 0 where the dose is per kg).

        Returns
        -------
        numpy.ndarray
            Cells, same shape as ``weight_kg``.

        Raises
        ------
        TrialConfigError
            For an observed arm (it has no dose).
        DataError
            When a per-kg dose meets a weight that is not finite and > 0.
        """
        weight = np.asarray(weight_kg, dtype=float)
        if not self.simulated:
            raise TrialConfigError(f"arm {self.name!r} is observed: it has no dose")
        if self.dose_cells is not None:
            return np.full(weight.shape, self.dose_cells)
        bad = ~(np.isfinite(weight) & (weight > 0))
        if bad.any():
            raise DataError(
                f"arm {self.name!r}: dose per kg needs body weights > 0 kg; got "
                f"{weight[bad][:3].tolist()}"
            )
        return weight * self.dose_cells_per_kg

    def to_dict(self) -> dict[str, Any]:
        """The arm as it would be written in a trial file (JSON-ready)."""
        if not self.simulated:
            product = {"product": self.product} if self.product else {}
            return {"name": self.name, **product, "observed": dict(self.observed)}
        dose = (
            {"dose_cells": self.dose_cells}
            if self.dose_cells is not None
            else {"dose_cells_per_kg": self.dose_cells_per_kg}
        )
        ld = self.lymphodepletion
        out = {
            "name": self.name,
            "product": self.product,
            **dose,
            "memory_fraction": self.memory_fraction,
            "lymphodepletion": {"regimen": ld.regimen, "days": list(ld.days),
                                "units_per_day": ld.units_per_day},
            "eligibility": {k: v for k, v in vars(self.eligibility).items()
                            if v is not None},
            "tocilizumab": {"at_crs_grade": self.tocilizumab.at_crs_grade or 0,
                            "doses": self.tocilizumab.doses},
            "steroids": {"at_crs_grade": self.steroids.at_crs_grade or 0,
                         "dexamethasone_mg": self.steroids.doses
                         * DEXAMETHASONE_MG_PER_UNIT},
        }
        if self.bridging is not None:
            out["bridging"] = {"days": list(self.bridging.days),
                               "units_per_day": self.bridging.units_per_day}
        return out


@dataclass(frozen=True)
class Trial:
    """A whole in silico trial, as read from a trial file.

    Attributes
    ----------
    name : str
    disease : str
        ``"LBCL"`` or ``"MM"``.
    arms : tuple of Arm
    endpoints : tuple of str
        Names from :data:`ENDPOINTS`, in the order to report them.
    patients_per_arm : int
        Virtual patients sampled per simulated arm (>= 1).
    seed : int
        Seed of the whole trial (>= 0).
    horizon_days : float
        Follow-up, days since infusion (>= 90); PFS is censored there.
    reference_arm : str
        Simulated arm that comparisons are made against.
    alpha : float
        Two-sided significance level, 0 < alpha < 0.5 (intervals are 1-alpha).
    power : float
        Power for sample sizes, 0 < power < 1.
    validate_against : str or None
        Published cohort (clinical-facts §8) to compare the reference arm with.
    population : dict
        Overrides passed to the virtual population (population.py).
    source : str
        File the trial was read from (not part of equality or the digest).
    """

    name: str
    disease: str
    arms: tuple[Arm, ...]
    endpoints: tuple[str, ...] = ENDPOINTS
    patients_per_arm: int = 1000
    seed: int = 0
    horizon_days: float = 365.0
    reference_arm: str = ""
    alpha: float = 0.05
    power: float = 0.8
    validate_against: str | None = None
    population: dict[str, Any] = field(default_factory=dict)
    source: str = field(default="<memory>", compare=False)

    def arm(self, name: str) -> Arm:
        """The arm called ``name`` (KeyError naming the arms when absent)."""
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(f"trial {self.name!r} has no arm {name!r}; arms: "
                       f"{[a.name for a in self.arms]}")

    @property
    def simulated_arms(self) -> tuple[Arm, ...]:
        """The arms that are simulated, in file order."""
        return tuple(a for a in self.arms if a.simulated)

    def to_dict(self) -> dict[str, Any]:
        """The trial in trial-file structure with every default filled in.

        ``parse_trial(trial.to_dict())`` gives back an equal trial.
        """
        head = {
            "name": self.name, "disease": self.disease,
            "patients_per_arm": self.patients_per_arm, "seed": self.seed,
            "horizon_days": self.horizon_days, "reference_arm": self.reference_arm,
            "alpha": self.alpha, "power": self.power,
        }
        if self.validate_against is not None:
            head["validate_against"] = self.validate_against
        return {
            "trial": head,
            "population": dict(self.population),
            "arm": [a.to_dict() for a in self.arms],
            "endpoint": [{"name": e} for e in self.endpoints],
        }

    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`to_dict`.

        Keys sorted, no spaces, no NaN; the source file name is not included,
        so the same trial written as TOML or YAML has the same digest.
        """
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                          allow_nan=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def with_overrides(
        self, patients_per_arm: int | None = None, seed: int | None = None
    ) -> Trial:
        """A copy with another number of patients per arm and/or seed.

        Raises
        ------
        TrialConfigError
            When ``patients_per_arm`` < 1 or ``seed`` < 0 or either is not an
            integer.
        """
        changes: dict[str, int] = {}
        for key, value, low, high in (
            ("patients_per_arm", patients_per_arm, 1, MAX_PATIENTS_PER_ARM),
            ("seed", seed, 0, 2**63 - 1),
        ):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or not low <= value <= high:
                raise TrialConfigError(
                    f"{self.source}: override {key} = {value!r}: must be an "
                    f"integer in [{low}, {high}]")
            changes[key] = int(value)
        return replace(self, **changes)


# -- reading --------------------------------------------------------------------


def example_trial_path() -> Path:
    """Path of the shipped example trial (``data/examples/trial_zuma1.toml``)."""
    folder = resources.files("cartwin.data").joinpath("examples")
    return Path(str(folder.joinpath(EXAMPLE_TRIAL)))


def load_trial(path: str | Path) -> Trial:
    """Read and check a trial file.

    Parameters
    ----------
    path : str or pathlib.Path
        ``.toml``, ``.yaml`` or ``.yml`` file.

    Returns
    -------
    Trial

    Raises
    ------
    TrialConfigError
        When the file cannot be read or parsed (with the parser's line and
        column), or any field is missing, unknown, of the wrong type or out of
        range; the message names the file, the field path and the value.
    """
    path = Path(path)
    source = str(path)
    data = read_document(path)
    if not data:
        raise TrialConfigError(f"{source}: the file is empty; a trial needs at "
                               "least [trial] and one [[arm]]")
    return parse_trial(data, source=source)


def parse_trial(data: Mapping[str, Any], *, source: str = "<memory>") -> Trial:
    """Check a trial already parsed into plain Python (see :func:`load_trial`).

    Raises
    ------
    TrialConfigError
        As :func:`load_trial`; ``source`` names the origin in messages.
    """
    top = Table(data, "", source)
    top.check_keys(("trial", "population", "arm", "endpoint"))
    head = top.table("trial", required=True)
    head.check_keys(("name", "disease", "patients_per_arm", "seed", "horizon_days",
                     "reference_arm", "alpha", "power", "validate_against"))
    arms = _arms(top)
    return Trial(
        name=head.text("name"),
        disease=head.choice("disease", DISEASES),
        arms=arms,
        endpoints=_endpoints(top),
        patients_per_arm=head.integer("patients_per_arm", 1000, low=1,
                                      high=MAX_PATIENTS_PER_ARM),
        seed=head.integer("seed", 0, low=0),
        horizon_days=head.number("horizon_days", 365.0, low=MIN_HORIZON_DAYS,
                                 high=MAX_HORIZON_DAYS),
        reference_arm=_reference_arm(head, arms),
        alpha=head.number("alpha", 0.05, low=0.0, high=0.5, open_=True),
        power=head.number("power", 0.8, low=0.0, high=1.0, open_=True),
        validate_against=head.text("validate_against", None),
        population=_population(top),
        source=source,
    )


def _arms(top: Table) -> tuple[Arm, ...]:
    items = top.array("arm")
    if not items:
        top.fail("arm", top.data.get("arm"), "a trial needs at least one [[arm]]")
    arms = tuple(_arm(item) for item in items)
    seen: dict[str, int] = {}
    for index, arm in enumerate(arms):
        if arm.name in seen:
            items[index].fail("name", arm.name,
                              f"duplicate arm name (also arm[{seen[arm.name]}])")
        seen[arm.name] = index
    return arms


def _arm(table: Table) -> Arm:
    name = table.text("name")
    if not _ARM_NAME.fullmatch(name):
        table.fail("name", name, "arm names use letters, digits, space and "
                   "._+()- (first a letter or digit; at most 64 characters)")
    if "observed" in table.data:
        table.check_keys(("name", "product", "observed"),
                         why="an observed arm takes only name, product, observed")
        return Arm(name=name, product=table.text("product", ""),
                   observed=_observed(table.table("observed", required=True)))
    table.check_keys(("name", "product", "dose_cells", "dose_cells_per_kg",
                      "memory_fraction", "lymphodepletion", "bridging",
                      "eligibility", "tocilizumab", "steroids"))
    dose_cells, per_kg = _dose(table)
    return Arm(
        name=name,
        product=table.text("product"),
        dose_cells=dose_cells,
        dose_cells_per_kg=per_kg,
        memory_fraction=table.number("memory_fraction", DEFAULT_MEMORY_FRACTION,
                                     low=0.0, high=1.0),
        lymphodepletion=_lymphodepletion(table.table("lymphodepletion")),
        bridging=_bridging(table.table("bridging")),
        eligibility=_eligibility(table.table("eligibility")),
        tocilizumab=_policy(table.table("tocilizumab"), "doses", 1.0),
        steroids=_policy(table.table("steroids"), "dexamethasone_mg",
                         DEXAMETHASONE_MG_PER_UNIT),
    )


def _dose(table: Table) -> tuple[float | None, float | None]:
    given = [k for k in ("dose_cells", "dose_cells_per_kg") if k in table.data]
    if len(given) != 1:
        shown = {k: table.data[k] for k in given} if given else MISSING
        table.fail(given[-1] if given else "dose_cells_per_kg", shown,
                   "a simulated arm gives exactly one of dose_cells (total "
                   "cells) or dose_cells_per_kg (cells/kg)")
    high = MAX_DOSE_CELLS if given[0] == "dose_cells" else MAX_DOSE_CELLS_PER_KG
    value = table.number(given[0], low=0.0, high=high, open_=True)
    return (value, None) if given[0] == "dose_cells" else (None, value)


def _lymphodepletion(table: Table | None) -> Lymphodepletion:
    if table is None:
        return Lymphodepletion()
    mg_keys = {"flu/cy": ("fludarabine_mg_m2", "cyclophosphamide_mg_m2"),
               "bendamustine": ("bendamustine_mg_m2",), "none": ()}
    table.check_keys(("regimen", "days", "units_per_day",
                      "fludarabine_mg_m2", "cyclophosphamide_mg_m2",
                      "bendamustine_mg_m2"))
    regimen = table.choice("regimen", tuple(LD_DEFAULTS), default="flu/cy")
    default_days, default_units = LD_DEFAULTS[regimen]
    for key in sorted(set(table.data) - {"regimen", "days", "units_per_day",
                                         *mg_keys[regimen]}):
        table.fail(key, table.data[key], f"does not apply to regimen {regimen!r}")
    if regimen == "none":
        days = table.days("days", ())
        if days:
            table.fail("days", list(days), "regimen 'none' has no days")
        return Lymphodepletion("none", (), table.number("units_per_day", 0.0,
                                                         low=0.0, high=0.0))
    units = _ld_units(table, mg_keys[regimen], default_units)
    days = table.days("days", default_days, nonempty=True)
    return Lymphodepletion(regimen, days, units)


def _ld_units(table: Table, mg_keys: tuple[str, ...], default: float) -> float:
    # explicit units, or mg/m2 converted with LD_REFERENCE (graph/inputs.py)
    given = [k for k in mg_keys if k in table.data]
    if "units_per_day" in table.data and given:
        table.fail(given[0], table.data[given[0]],
                   "give either units_per_day or the mg/m2 doses, not both")
    if not given:
        return table.number("units_per_day", default, low=0.0)
    units = 0.0
    for key in mg_keys:
        drug = key.removesuffix("_mg_m2")
        reference, weight = LD_REFERENCE[drug]
        mg = table.number(key, reference, low=0.0)
        units += weight * mg / reference
    return units


def _bridging(table: Table | None) -> Bridging | None:
    if table is None:
        return None
    table.check_keys(("days", "units_per_day"))
    return Bridging(days=table.days("days", nonempty=True),
                    units_per_day=table.number("units_per_day", 1.0, low=0.0))


def _eligibility(table: Table | None) -> Eligibility:
    if table is None:
        return Eligibility()
    table.check_keys(("max_hematotox", "min_age", "max_age", "max_prior_lines"))
    rules = Eligibility(
        max_hematotox=table.integer("max_hematotox", None, low=0, high=7),
        min_age=table.number("min_age", None, low=0.0, high=120.0),
        max_age=table.number("max_age", None, low=0.0, high=120.0),
        max_prior_lines=table.integer("max_prior_lines", None, low=0),
    )
    if None not in (rules.min_age, rules.max_age) and rules.min_age > rules.max_age:
        table.fail("max_age", rules.max_age,
                   f"is below min_age = {rules.min_age}: nobody is eligible")
    return rules


def _policy(table: Table | None, amount_key: str, per_unit: float) -> DrugPolicy:
    if table is None:
        return DrugPolicy(None, 1.0)
    table.check_keys(("at_crs_grade", amount_key))
    grade = table.integer("at_crs_grade", 0, low=0, high=4,
                          why="an ASTCT CRS grade 0..4 (0 = never)")
    amount = table.number(amount_key, per_unit, low=0.0)
    return DrugPolicy(grade or None, amount / per_unit)


def _observed(table: Table) -> dict[str, float]:
    table.check_keys(("n", *PROPORTION_ENDPOINTS))
    observed: dict[str, float] = {"n": table.integer("n", low=1)}
    for key in PROPORTION_ENDPOINTS:
        value = table.number(key, None, low=0.0, high=1.0)
        if value is not None:
            observed[key] = value
    if len(observed) == 1:
        table.fail("n", observed["n"], "an observed arm needs at least one "
                   f"proportion of {PROPORTION_ENDPOINTS}")
    return observed


def _endpoints(top: Table) -> tuple[str, ...]:
    items = top.array("endpoint")
    if not items:
        return ENDPOINTS
    names: list[str] = []
    for item in items:
        item.check_keys(("name",))
        name = item.choice("name", ENDPOINTS)
        if name in names:
            item.fail("name", name, "endpoint listed twice")
        names.append(name)
    return tuple(names)


def _reference_arm(head: Table, arms: tuple[Arm, ...]) -> str:
    simulated = [a.name for a in arms if a.simulated]
    if not simulated:
        head.fail("reference_arm", None, "the trial needs at least one simulated "
                  "arm (one without 'observed')")
    name = head.text("reference_arm", simulated[0])
    if name not in {a.name for a in arms}:
        head.fail("reference_arm", name, f"is not an arm; arms: "
                  f"{[a.name for a in arms]}")
    if name not in simulated:
        head.fail("reference_arm", name, f"is an observed arm; the reference "
                  f"must be simulated: {simulated}")
    return name


def _population(top: Table) -> dict[str, Any]:
    table = top.table("population")
    if table is None:
        return {}
    for key, value in table.data.items():
        if not isinstance(key, str):
            table.fail(str(key), value, "keys must be strings")
        if isinstance(value, (bool, str)):
            continue
        if isinstance(value, (int, float)):
            table.number(key)
            continue
        table.fail(key, value, "population overrides are numbers, true/false "
                   "or text")
    return dict(table.data)
