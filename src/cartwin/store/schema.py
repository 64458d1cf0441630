"""Table layout of the twin store, shaped after the OMOP CDM v5.4.

The store keeps one patient's data in tables named and laid out like the OMOP
Common Data Model v5.4 (``person``, ``measurement``, ``drug_exposure``,
``procedure_occurrence``, ``condition_occurrence``, ``observation``), with the
source values kept, plus columns prefixed ``cartwin_`` that hold what OMOP has
no field for, so that a stored :class:`~cartwin.record.model.PatientRecord`
reads back equal to the one written. Three more tables are cartwin's own:
``cartwin_meta`` (schema version), ``import_log`` and ``twin_version``.

No direct identifier is stored. The ``person`` table deliberately has **no**
name, birth date, ``year_of_birth``, ``month_of_birth``, ``birth_datetime``,
address, ``location_id`` or provider columns, although OMOP defines some of
them: the person is known only by the keyed pseudonym
(``person_source_value``) and the age in whole years at the index instant
(``age_at_index``). Standard concept ids are 0 ("No matching concept") except
where a fixed OMOP concept is known (gender, value operator); mapping source
codes to standard concepts needs the OHDSI vocabularies, which are not shipped.
OMOP's ``*_date`` columns are left out: the ``*_datetime`` columns hold UTC
instants and the date in any zone follows from them.

Concept ids used (OHDSI Standardized Vocabularies, domain "Gender" and
"Meas Value Operator"; checked against the OMOP CDM v5.4 documentation, which
states that 4172703 means "=" and equals an omitted operator):

==========  ======  =====================================
concept id  symbol  meaning
==========  ======  =====================================
8507        --      MALE
8532        --      FEMALE
4171756     <       less than
4171754     <=      less than or equal
4172703     =       equal (same as NULL)
4171755     >=      greater than or equal
4172704     >       greater than
==========  ======  =====================================

References
----------
OHDSI. OMOP Common Data Model v5.4. https://ohdsi.github.io/CommonDataModel/cdm54.html
"""

from __future__ import annotations

from dataclasses import dataclass

#: Version of the table layout written by this cartwin; see :func:`ddl`.
SCHEMA_VERSION = 1

#: OMOP gender concept ids for FHIR ``Patient.gender`` values; others map to 0.
GENDER_CONCEPTS = {"male": 8507, "female": 8532}

#: OMOP "Meas Value Operator" concept ids by symbol.
OPERATOR_CONCEPTS = {
    "<": 4171756,
    "<=": 4171754,
    "=": 4172703,
    ">=": 4171755,
    ">": 4172704,
}

#: Operator written for each :attr:`Observation.censored` value.
CENSORED_OPERATORS = {"below": OPERATOR_CONCEPTS["<"], "above": OPERATOR_CONCEPTS[">"]}

#: Censoring read back for each operator (``<=``/``>=`` come only from other
#: writers and are read as below/above; ``=`` and NULL are exact values).
OPERATOR_CENSORING = {
    OPERATOR_CONCEPTS["<"]: "below",
    OPERATOR_CONCEPTS["<="]: "below",
    OPERATOR_CONCEPTS[">"]: "above",
    OPERATOR_CONCEPTS[">="]: "above",
    OPERATOR_CONCEPTS["="]: None,
}


@dataclass(frozen=True)
class EventTable:
    """Where the parts of an :class:`~cartwin.record.model.Event` go in one table.

    Each attribute names the column that holds one part; OMOP columns where the
    CDM has one, ``cartwin_`` columns where it has not.
    """

    table: str
    id_col: str
    concept_col: str
    start_col: str
    end_col: str
    source_col: str
    dose_col: str
    dose_unit_col: str


#: The four OMOP event tables, in the order they are written.
EVENT_TABLES = (
    EventTable(
        "drug_exposure", "drug_exposure_id", "drug_concept_id",
        "drug_exposure_start_datetime", "drug_exposure_end_datetime",
        "drug_source_value", "quantity", "dose_unit_source_value",
    ),
    EventTable(
        "procedure_occurrence", "procedure_occurrence_id", "procedure_concept_id",
        "procedure_datetime", "procedure_end_datetime",
        "procedure_source_value", "quantity", "cartwin_dose_unit",
    ),
    EventTable(
        "condition_occurrence", "condition_occurrence_id", "condition_concept_id",
        "condition_start_datetime", "condition_end_datetime",
        "condition_source_value", "cartwin_dose", "cartwin_dose_unit",
    ),
    EventTable(
        "observation", "observation_id", "observation_concept_id",
        "observation_datetime", "cartwin_end_datetime",
        "observation_source_value", "value_as_number", "unit_source_value",
    ),
)  # fmt: skip

#: Event kinds given to drugs (the CAR T product infusion included).
DRUG_KINDS = frozenset(
    {"infusion", "lymphodepletion", "tocilizumab", "corticosteroid",
     "vasopressor", "antipyretic", "bridging"}
)  # fmt: skip
#: Event kinds that are procedures or supportive care.
PROCEDURE_KINDS = frozenset({"leukapheresis", "oxygen", "icu"})
#: ICANS findings, which OMOP files as conditions (SNOMED clinical findings).
CONDITION_KINDS = frozenset({"seizure", "cerebral_edema", "motor_weakness"})

_RADIOTHERAPY_WORDS = ("radiotherapy", "radiation", "irradiation")


def event_table(kind: str, name: str, detail: str) -> str:
    """OMOP table an event is written to.

    Bridging therapy goes to ``procedure_occurrence`` when its name or detail
    mentions radiotherapy (``"radiotherapy"``, ``"radiation"``,
    ``"irradiation"``) and to ``drug_exposure`` otherwise. The level of
    consciousness and any kind not listed in ``EVENT_KINDS`` go to
    ``observation``.
    """
    if kind == "bridging":
        text = f"{name} {detail}".lower()
        if any(word in text for word in _RADIOTHERAPY_WORDS):
            return "procedure_occurrence"
    if kind in DRUG_KINDS:
        return "drug_exposure"
    if kind in PROCEDURE_KINDS:
        return "procedure_occurrence"
    if kind in CONDITION_KINDS:
        return "condition_occurrence"
    return "observation"


_META = """
CREATE TABLE cartwin_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)
"""

_PERSON = """
CREATE TABLE person (
    person_id BIGINT PRIMARY KEY,
    person_source_value VARCHAR NOT NULL UNIQUE,
    gender_concept_id INTEGER NOT NULL,
    gender_source_value VARCHAR,
    age_at_index INTEGER,
    diagnosis_source_value VARCHAR,
    cartwin_diagnosis VARCHAR,
    disease VARCHAR,
    product VARCHAR,
    site_utc_offset_min INTEGER,
    import_id BIGINT NOT NULL
)
"""

_MEASUREMENT = """
CREATE TABLE measurement (
    measurement_id BIGINT PRIMARY KEY,
    person_id BIGINT NOT NULL,
    measurement_concept_id INTEGER NOT NULL,
    cartwin_quantity VARCHAR NOT NULL,
    measurement_datetime TIMESTAMPTZ NOT NULL,
    value_as_number DOUBLE NOT NULL,
    unit_source_value VARCHAR NOT NULL,
    operator_concept_id INTEGER,
    measurement_source_value VARCHAR,
    value_source_value VARCHAR,
    cartwin_source_value DOUBLE,
    cartwin_source_unit VARCHAR,
    source_id VARCHAR,
    source_utc_offset_min INTEGER NOT NULL,
    import_id BIGINT NOT NULL
)
"""

_IMPORT_LOG = """
CREATE TABLE import_log (
    import_id BIGINT PRIMARY KEY,
    source_name VARCHAR NOT NULL,
    source_sha256 VARCHAR NOT NULL UNIQUE,
    imported_at TIMESTAMPTZ NOT NULL,
    package_version VARCHAR NOT NULL,
    counts JSON NOT NULL,
    report JSON
)
"""

_TWIN_VERSION = """
CREATE TABLE twin_version (
    version_id VARCHAR PRIMARY KEY,
    seq BIGINT NOT NULL UNIQUE,
    pseudonym VARCHAR NOT NULL,
    person_id BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    created_at_utc_offset_min INTEGER NOT NULL,
    data_hash VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    package_version VARCHAR NOT NULL,
    settings JSON NOT NULL,
    parameters JSON NOT NULL,
    posterior JSON NOT NULL,
    outputs JSON NOT NULL,
    parent_id VARCHAR
)
"""


def _event_ddl(spec: EventTable) -> str:
    columns = (
        f"{spec.id_col} BIGINT PRIMARY KEY",
        "person_id BIGINT NOT NULL",
        f"{spec.concept_col} INTEGER NOT NULL",
        f"{spec.start_col} TIMESTAMPTZ NOT NULL",
        f"{spec.end_col} TIMESTAMPTZ",
        f"{spec.source_col} VARCHAR",
        f"{spec.dose_col} DOUBLE",
        f"{spec.dose_unit_col} VARCHAR",
        "cartwin_kind VARCHAR NOT NULL",
        "cartwin_name VARCHAR",
        "cartwin_detail VARCHAR",
        "source_id VARCHAR",
        "source_utc_offset_min INTEGER NOT NULL",
        "import_id BIGINT NOT NULL",
    )
    return f"CREATE TABLE {spec.table} (\n    " + ",\n    ".join(columns) + "\n)"


#: Every table of the store, in creation order.
TABLES = (
    "cartwin_meta",
    "import_log",
    "person",
    "measurement",
    *(spec.table for spec in EVENT_TABLES),
    "twin_version",
)


def ddl() -> tuple[str, ...]:
    """``CREATE TABLE`` statements of schema version :data:`SCHEMA_VERSION`."""
    events = tuple(_event_ddl(spec) for spec in EVENT_TABLES)
    return (_META, _IMPORT_LOG, _PERSON, _MEASUREMENT, *events, _TWIN_VERSION)
