"""Which model recalibrates on which observation kinds, and how soon.

Each model of the twin declares, in :data:`UPDATE_RULES`, the observation kinds
that make its twin out of date and its debounce window: the first such
observation of a patient creates a job due one window later, and every further
observation before the job starts joins that job. The window is therefore the
longest a new observation waits before a recalibration starts, and a stream of
observations (vital signs every second) costs one recalibration per window.

============  ======  ===================================================  =====
model         window  kinds                                                ref.
============  ======  ===================================================  =====
crs_grading   5 s     temperature, systolic_bp, diastolic_bp, spo2,        [1]_
                      vasopressor (event), oxygen (event)
kinetics      1 h     cart_flow, cart_qpcr                                 [2]_
omics_priors  1 day   single_cell (placeholder, see below)                 --
============  ======  ===================================================  =====

A kind is a :class:`~cartwin.record.model.Observation` quantity (see
``data/codes/quantities.csv``) or an :class:`~cartwin.record.model.Event`
kind. The kinds of the CRS rule are the inputs of the ASTCT CRS grade: fever
(temperature), hypotension (blood pressure) and the vasopressors it needs,
hypoxia (SpO2) and the oxygen support it needs [1]_. The kinetics rule follows
the CAR T measurements the kinetics model is fitted to [2]_.

``single_cell`` is a placeholder: no reader produces a record kind for a
single-cell upload yet, and the twin has no omics-driven prior yet; the rule
is there so that such uploads, once read, are scheduled like everything else.
Every job currently runs the whole :func:`cartwin.twin.build.build_twin`, which
re-grades CRS and refits the kinetics together.

References
----------
.. [1] Lee DW, et al. ASTCT consensus grading for cytokine release syndrome and
   neurologic toxicity associated with immune effector cells. Biol Blood Marrow
   Transplant 2019;25:625-638. https://doi.org/10.1016/j.bbmt.2018.12.758
.. [2] Stein AM, et al. Tisagenlecleucel model-based cellular kinetic analysis
   of chimeric antigen receptor-T cells. CPT Pharmacometrics Syst Pharmacol
   2019;8:285-295. https://doi.org/10.1002/psp4.12388
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cartwin.errors import ModelSpecificationError
from cartwin.record.model import PatientRecord

#: Placeholder kind of a single-cell upload; no reader produces it yet.
SINGLE_CELL = "single_cell"


@dataclass(frozen=True)
class UpdateRule:
    """When one model of the twin recalibrates.

    Attributes
    ----------
    model : str
        Name of the model, recorded in each job (``pending_update.model``).
    kinds : frozenset of str
        Observation quantities and event kinds that trigger it.
    window_s : float
        Debounce window in seconds (> 0): a job is due this long after the
        first observation that created it.
    description : str
        One line for the queue view.
    """

    model: str
    kinds: frozenset[str]
    window_s: float
    description: str = ""

    def __post_init__(self) -> None:
        if not self.model:
            raise ModelSpecificationError("an update rule needs a model name")
        if not self.kinds:
            raise ModelSpecificationError(
                f"update rule {self.model!r} has no observation kinds"
            )
        if not self.window_s > 0:
            raise ModelSpecificationError(
                f"update rule {self.model!r}: window_s must be > 0 seconds, "
                f"got {self.window_s!r}"
            )


#: The twin's recalibration table (see the module docstring).
UPDATE_RULES = (
    UpdateRule(
        "crs_grading",
        frozenset({"temperature", "systolic_bp", "diastolic_bp", "spo2",
                   "vasopressor", "oxygen"}),
        5.0,
        "ASTCT CRS grade from vital signs and supportive care",
    ),
    UpdateRule(
        "kinetics", frozenset({"cart_flow", "cart_qpcr"}), 3600.0,
        "CAR T kinetics calibration and forecast",
    ),
    UpdateRule(
        "omics_priors", frozenset({SINGLE_CELL}), 86400.0,
        "omics-driven priors (placeholder: single-cell uploads not yet read)",
    ),
)  # fmt: skip


def check_rules(rules: Sequence[UpdateRule]) -> tuple[UpdateRule, ...]:
    """Return ``rules`` as a tuple after checking model names are unique.

    Raises
    ------
    ModelSpecificationError
        When two rules name the same model.
    """
    names = [rule.model for rule in rules]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ModelSpecificationError(
            f"update rules name models more than once: {', '.join(repeated)}"
        )
    return tuple(rules)


def triggered(
    kinds: Iterable[str], rules: Sequence[UpdateRule] = UPDATE_RULES
) -> list[tuple[UpdateRule, list[str]]]:
    """Rules that ``kinds`` trigger, each with the kinds that triggered it.

    Examples
    --------
    >>> [(r.model, k) for r, k in triggered(["spo2", "crp", "cart_qpcr"])]
    [('crs_grading', ['spo2']), ('kinetics', ['cart_qpcr'])]
    """
    seen = set(kinds)
    return [(rule, sorted(seen & rule.kinds)) for rule in rules if seen & rule.kinds]


def observation_kinds(records: Iterable[PatientRecord]) -> dict[str, set[str]]:
    """Observation quantities and event kinds of each patient in ``records``."""
    kinds: dict[str, set[str]] = {}
    for record in records:
        found = kinds.setdefault(record.facts.pseudonym, set())
        found.update(o.quantity for o in record.observations)
        found.update(e.kind for e in record.events)
    return kinds
