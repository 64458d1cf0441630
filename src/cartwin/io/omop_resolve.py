"""Resolve OMOP concept ids to what cartwin reads, in three steps.

1. **Concept table**: a row of the shipped ``omop_concepts.csv`` or a site
   table (:mod:`cartwin.io.omop_concepts`) decides.
2. **Vocabulary**: when the source has a ``concept`` table, a concept of
   vocabulary ``LOINC``, ``RxNorm``, ``SNOMED`` or ``UCUM`` whose code is a
   row of the code table (:mod:`cartwin.io.codes`, the same table the FHIR
   reader uses) is mapped like that coding. Conditions not mapped so far are
   grouped by the disease rules of :mod:`cartwin.io._disease` applied to the
   concept's name and, for ICD-10 vocabularies, its code.
3. **Ancestor**: a drug concept still unmapped whose ancestor in the source's
   ``concept_ancestor`` table is a mapped drug (an ingredient, typically) is
   mapped like that ancestor; the nearest ancestor wins, ties by lower id.

Which targets a table accepts is fixed by :data:`ACCEPTS`: a concept mapped to
a quantity is recognised in ``measurement`` and ``observation``, one mapped to
an event kind in the event tables, one mapped to a disease group in
``condition_occurrence`` and ``episode``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from cartwin.io._disease import coding_group
from cartwin.io.codes import CodeMap
from cartwin.io.omop_concepts import ConceptMap, ConceptTarget
from cartwin.io.omop_source import OmopSource

#: Code-table system of each OMOP vocabulary read in step 2.
VOCABULARY_SYSTEMS = {
    "LOINC": "http://loinc.org",
    "RxNorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "SNOMED": "http://snomed.info/sct",
}
#: Target types recognised in each table.
ACCEPTS = {
    "measurement": ("observation",),
    "observation": ("observation", "event"),
    "drug_exposure": ("event",),
    "procedure_occurrence": ("event",),
    "condition_occurrence": ("event", "diagnosis"),
    "episode": ("event", "diagnosis"),
}
_ICD10 = "http://hl7.org/fhir/sid/icd-10"


@dataclass
class Resolver:
    """Concept ids of one import resolved to targets, names and units.

    Attributes
    ----------
    targets : dict[int, ConceptTarget]
        Every resolved concept id (steps 1-3).
    names : dict[int, str]
        Concept names from the concept tables and the source's ``concept``.
    vocab : dict[int, tuple[str, str, str]]
        ``(name, vocabulary_id, concept_code)`` of ids found in the source.
    """

    concepts: ConceptMap
    codes: CodeMap
    targets: dict[int, ConceptTarget] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    vocab: dict[int, tuple[str, str, str]] = field(default_factory=dict)

    def resolve(
        self, source: OmopSource, ids: Iterable[int], drug_ids: Iterable[int] = ()
    ) -> None:
        """Resolve ``ids``; ``drug_ids`` may also resolve through ancestors."""
        ids = {int(i) for i in ids if i}
        self.vocab = source.concepts(sorted(ids))
        for cid in ids:
            row = self.concepts.get(cid)
            name = self.vocab.get(cid, ("",))[0] or (row.name if row else "")
            self.names[cid] = name
            found = row or self._from_vocabulary(cid)
            if found is not None:
                self.targets[cid] = found
        unresolved = sorted(
            int(i) for i in drug_ids if i and int(i) not in self.targets
        )
        self._from_ancestors(source, unresolved)

    def target(self, concept_id: int | None, table: str) -> ConceptTarget | None:
        """The target of ``concept_id`` when ``table`` accepts its type."""
        found = self.targets.get(concept_id) if concept_id else None
        if found is None or found.target_type not in ACCEPTS[table]:
            return None
        return found

    def unit(self, concept_id: int | None) -> str | None:
        """UCUM code of a unit concept, or ``None`` when it is not known."""
        found = self.targets.get(concept_id) if concept_id else None
        return found.target if found and found.target_type == "unit" else None

    def disease(self, concept_ids: Iterable[int | None]) -> tuple[str, str] | None:
        """``(group, display)`` of the first concept naming a disease group."""
        for cid in concept_ids:
            found = self.targets.get(cid) if cid else None
            if found is not None and found.target_type == "diagnosis":
                return found.target, found.name
            if cid in self.vocab:
                group = _vocabulary_group(self.vocab[cid], self.codes)
                if group is not None:
                    return group, self.vocab[cid][0]
        return None

    def _from_vocabulary(self, cid: int) -> ConceptTarget | None:
        if cid not in self.vocab:
            return None
        name, vocabulary, code = self.vocab[cid]
        if vocabulary == "UCUM":
            return ConceptTarget(cid, "unit", code, name, "vocabulary")
        row = self.codes.lookup(VOCABULARY_SYSTEMS.get(vocabulary), code)
        if row is None:
            return None
        return ConceptTarget(cid, row.target_type, row.target, name, "vocabulary")

    def _from_ancestors(self, source: OmopSource, unresolved: list[int]) -> None:
        if not unresolved:
            return
        mapped = self._drug_ancestors(source)
        links = sorted(
            source.ancestors(unresolved, sorted(mapped)),
            key=lambda r: (r[0], r[2], r[1]),
        )
        for descendant, ancestor, _ in links:
            if descendant in self.targets:
                continue
            base = mapped[ancestor]
            self.targets[descendant] = ConceptTarget(
                descendant,
                base.target_type,
                base.target,
                self.names.get(descendant) or base.name,
                f"ancestor {ancestor}",
            )

    def _drug_ancestors(self, source: OmopSource) -> dict[int, ConceptTarget]:
        """Event concepts an unmapped drug may descend from: the concept
        tables' rows and the source's RxNorm concepts of code-table rows."""
        mapped = dict(self.concepts.of_type("event"))
        system = VOCABULARY_SYSTEMS["RxNorm"]
        rows = {
            r.code: r
            for r in self.codes.rows.values()
            if r.system == system and r.target_type == "event"
        }
        for cid, code in source.concept_ids_of("RxNorm", sorted(rows)).items():
            row = rows[code]
            mapped.setdefault(
                cid, ConceptTarget(cid, "event", row.target, row.display, "vocabulary")
            )
        return mapped


def via(target: ConceptTarget) -> str:
    """``table``, ``vocabulary`` or ``ancestor``: how a target was found."""
    if target.origin == "vocabulary":
        return "vocabulary"
    if target.origin.startswith("ancestor"):
        return "ancestor"
    return "table"


def _vocabulary_group(entry: tuple[str, str, str], codes: CodeMap) -> str | None:
    name, vocabulary, code = entry
    system = (
        _ICD10
        if vocabulary.upper().startswith("ICD10")
        else (VOCABULARY_SYSTEMS.get(vocabulary, vocabulary))
    )
    return coding_group({"system": system, "code": code, "display": name}, codes)
