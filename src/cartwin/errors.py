"""Exception and warning classes of cartwin.

One base class, :class:`CartwinError`, with one subclass per kind of failure a
user can act on. Messages always name the file, resource, field and value
involved, so that an error in a 50 000-observation bundle can be found.
"""

from __future__ import annotations


class CartwinError(Exception):
    """Base class of every error raised deliberately by cartwin."""


class DataError(CartwinError):
    """Input data is malformed, incomplete or inconsistent."""


class UnitError(DataError):
    """A value carries a unit that cannot be converted to the canonical unit."""


class StoreError(CartwinError):
    """The twin store cannot be opened, read or written."""


class ModelSpecificationError(CartwinError):
    """A model is declared or configured inconsistently."""


class CalibrationError(CartwinError):
    """Calibration of a twin failed in a way the caller asked to be raised."""


class MissingInputError(DataError):
    """A score or rule lacks an input; the message says which and where we looked."""


class DataQualityWarning(UserWarning):
    """Data were accepted, but something about them deserves a look."""


class TrialConfigError(DataError):
    """A trial file is malformed: the message names the file, field and value."""


class UnsupportedModelError(ModelSpecificationError, NotImplementedError):
    """A model file uses a construct cartwin does not translate (named in the message).

    Also a :class:`NotImplementedError`, since the construct is valid in its
    standard; as a :class:`CartwinError` the command line reports it as a
    one-line error.
    """
