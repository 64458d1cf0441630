"""CAR T level observations of one patient, ready for calibration.

:class:`KineticsData` holds the arrays the kinetics likelihood reads: days
since infusion, values in the assay's canonical unit, and censoring flags.
:func:`kinetics_data_from_record` builds it from a
:class:`~cartwin.record.PatientRecord`, choosing the assay with the most
observations. Joining qPCR and flow cytometry in one fit (with a conversion
parameter) is not done yet: one assay per fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cartwin.errors import DataError
from cartwin.models.kinetics import ASSAY_UNITS
from cartwin.record.model import PatientRecord

#: Assays in order of preference when a record has as many of each.
ASSAY_PREFERENCE = ("cart_qpcr", "cart_flow")


def _empty_flags() -> np.ndarray:
    return np.zeros(0, dtype=bool)


@dataclass(frozen=True)
class KineticsData:
    """CAR T levels of one patient for one assay.

    Attributes
    ----------
    t_days : numpy.ndarray of float
        Days since the infusion instant. Negative times (before infusion) are
        kept here and ignored, with a count, by the calibration.
    values : numpy.ndarray of float
        Level in the assay's canonical unit (``{copies}/ug`` for
        ``cart_qpcr``, ``/uL`` for ``cart_flow``); for a censored value, the
        limit of quantification. Must be finite and > 0.
    below_lloq : numpy.ndarray of bool
        True where the true value is below ``values`` (< LLOQ).
    assay : str
        ``"cart_qpcr"`` or ``"cart_flow"``.
    above_uloq : numpy.ndarray of bool
        True where the true value is above ``values`` (> upper limit); empty
        means none.

    Raises
    ------
    DataError
        When arrays differ in length, a time is not finite, a value is not
        finite or not > 0, or both flags are set on one observation.
    """

    t_days: np.ndarray
    values: np.ndarray
    below_lloq: np.ndarray
    assay: str = "cart_qpcr"
    above_uloq: np.ndarray = field(default_factory=_empty_flags)

    def __post_init__(self) -> None:
        n_obs = np.size(self.t_days)
        for name, dtype in (("t_days", float), ("values", float)):
            _set(self, name, np.asarray(getattr(self, name), dtype=dtype).ravel())
        for name in ("below_lloq", "above_uloq"):
            flags = np.asarray(getattr(self, name), dtype=bool).ravel()
            _set(self, name, np.zeros(n_obs, bool) if flags.size == 0 else flags)
        self._check()

    def _check(self) -> None:
        if self.assay not in ASSAY_UNITS:
            raise DataError(
                f"KineticsData.assay {self.assay!r} is not one of {sorted(ASSAY_UNITS)}"
            )
        sizes = {n: getattr(self, n).size for n in _ARRAYS}
        if len(set(sizes.values())) != 1:
            raise DataError(f"KineticsData arrays differ in length: {sizes}")
        _first_bad("t_days", self.t_days, ~np.isfinite(self.t_days))
        valid = np.isfinite(self.values) & (self.values > 0)
        _first_bad("values", self.values, ~valid)
        _first_bad("above_uloq", self.above_uloq, self.below_lloq & self.above_uloq)

    def __len__(self) -> int:
        return int(self.t_days.size)

    @property
    def unit(self) -> str:
        """Canonical UCUM unit of :attr:`values`."""
        return ASSAY_UNITS[self.assay]


_ARRAYS = ("t_days", "values", "below_lloq", "above_uloq")


def _set(data: KineticsData, name: str, value: np.ndarray) -> None:
    object.__setattr__(data, name, value)


def _first_bad(name: str, values: np.ndarray, bad: np.ndarray) -> None:
    if np.any(bad):
        index = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"KineticsData.{name}[{index}] = {values[index]!r} is not allowed "
            "(times finite; values finite and > 0; a value cannot be both "
            "below and above a limit)"
        )


def kinetics_data_from_record(
    record: PatientRecord, assay: str | None = None
) -> KineticsData:
    """CAR T levels of ``record`` for the kinetics model.

    Parameters
    ----------
    record : PatientRecord
        The patient; needs an infusion event when it has CAR T observations.
    assay : str, optional
        ``"cart_qpcr"`` or ``"cart_flow"``. By default the assay with the most
        observations; on a tie (including none) qPCR, whose prior is
        published.

    Returns
    -------
    KineticsData
        Possibly empty (then calibration returns the prior).

    Raises
    ------
    DataError
        When the record has CAR T observations but no infusion event, or a
        value is invalid.
    """
    if assay is None:
        counts = record.quantities()
        assay = max(
            ASSAY_PREFERENCE, key=lambda a: (counts.get(a, 0), a == "cart_qpcr")
        )
    series = record.series(assay)
    above = np.array(
        [o.censored == "above" for o in record.observations_of(assay)], dtype=bool
    )
    return KineticsData(
        t_days=series.t_days,
        values=series.values,
        below_lloq=series.below_lloq,
        assay=assay,
        above_uloq=above,
    )
