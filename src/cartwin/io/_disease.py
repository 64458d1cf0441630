"""Disease group of a Condition: LBCL, MM, B-ALL or another malignancy.

Rules, in order, for each coding of ``Condition.code``:

1. a ``diagnosis`` row of the code table (sites add their own codes there);
2. ICD-10 (any system URI containing ``icd-10``: WHO, -CM, -GM), compared
   without dots: C83.3 (diffuse large B-cell lymphoma) and C85.2 (mediastinal
   (thymic) large B-cell lymphoma) give ``LBCL``, C90.0 (multiple myeloma)
   ``MM``, C91.0 (acute lymphoblastic leukaemia) ``B-ALL``; any other code of
   chapter II C00-C96 (malignant neoplasms) gives ``other``;
3. the coding display, case-insensitive: "large b-cell" gives ``LBCL``,
   "myeloma" ``MM``, "lymphoblastic" ``B-ALL``.

When no coding gives a group, rule 3 is applied to ``Condition.code.text``.
C91.0 and "lymphoblastic" also cover T-lineage ALL, which CAR T products for
B-ALL do not treat; the import cannot tell them apart without a lineage code.

References
----------
World Health Organization. ICD-10, International Statistical Classification of
Diseases and Related Health Problems, 10th revision, 2019 edition, chapter II.
https://icd.who.int/browse10/2019/en
"""

from __future__ import annotations

from cartwin.io.codes import CodeMap

_ICD10_GROUPS = (("C833", "LBCL"), ("C852", "LBCL"), ("C900", "MM"), ("C910", "B-ALL"))
_TEXT_GROUPS = (("large b-cell", "LBCL"), ("myeloma", "MM"), ("lymphoblastic", "B-ALL"))


def coding_group(coding: dict, codes: CodeMap) -> str | None:
    """Disease group given by one coding, or ``None``."""
    system, code = coding.get("system"), coding.get("code")
    row = codes.lookup(system, code)
    if row is not None and row.target_type == "diagnosis":
        return row.target
    if system and code and "icd-10" in system.lower():
        group = _icd10_group(code)
        if group is not None:
            return group
    return text_group(coding.get("display"))


def text_group(text: str | None) -> str | None:
    """Disease group named by free text, or ``None``."""
    if not text:
        return None
    lowered = text.lower()
    for needle, group in _TEXT_GROUPS:
        if needle in lowered:
            return group
    return None


def _icd10_group(code: str) -> str | None:
    compact = code.replace(".", "").strip().upper()
    for prefix, group in _ICD10_GROUPS:
        if compact.startswith(prefix):
            return group
    if len(compact) >= 3 and compact[0] == "C" and compact[1:3].isdigit():
        return "other" if int(compact[1:3]) <= 96 else None
    return None
