"""GA4GH Phenopackets v2: real files, a CAR T fixture, round trip, bad input.

Real files: ``shared/data/real/phenopackets`` (GA4GH schema example and
phenopacket-store cases; provenance in its ``PROVENANCE.md``). Their element
counts are checked against a direct ``json`` count; the expected facts (age,
sex, events) were read off the files by hand when the test was written.
The fixture ``tests/data/phenopackets/cart_lbcl.json`` is hand-written and
synthetic.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from pathlib import Path

import phenopackets as pps
import pytest
from google.protobuf.json_format import ParseDict

from cartwin.errors import DataError, DataQualityWarning
from cartwin.io.codes import load_code_map
from cartwin.io.phenopacket import (
    PSEUDONYM_ID_PREFIX,
    PhenopacketError,
    coding_to_curie,
    curie_to_coding,
    disease_group,
    export_phenopacket,
    is_phenopacket,
    read_phenopacket,
)
from cartwin.record.model import Event, Observation, PatientFacts, PatientRecord
from cartwin.record.pseudonym import DEMO_KEY, pseudonymise

KEY = b"cartwin-test-key"
FIXTURE = (
    Path(__file__).resolve().parents[1] / "data" / "phenopackets" / "cart_lbcl.json"
)
ELEMENTS = (
    "phenotypicFeatures",
    "diseases",
    "measurements",
    "medicalActions",
    "biosamples",
    "interpretations",
)
UTC = dt.timezone.utc
LOCAL = "https://cartwin.org/fhir/CodeSystem/local"


def _real_dir() -> Path:
    shared = os.environ.get("CARTWIN_SHARED") or (
        Path(__file__).resolve().parents[2] / ".." / "shared"
    )
    return Path(shared).resolve() / "data" / "real" / "phenopackets"


REAL = _real_dir()
needs_real = pytest.mark.skipif(
    not REAL.is_dir(),
    reason=f"real phenopackets not found at {REAL}; set CARTWIN_SHARED",
)

#: Read off each file: (age in years, sex, number of events).
REAL_FACTS = {
    "ga4gh-schema-covid19.json": (70, "male", 4),
    "store-CYP21A2-PMID_30968594_individual_1.json": (None, "male", 0),
    "store-IKZF1-PMID_21548011_Case_report.json": (0, "male", 0),
    "store-PRF1-PMID_12229880_Case_1.json": (27, "male", 0),
    "store-PRF1-PMID_28468610_8_year_old_boy.json": (8, "male", 0),
    "store-SAMD9L-PMID_27259050_III_3.json": (47, "male", 0),
}


@pytest.fixture(scope="module")
def demo():
    """The demo patient and its twin (fixed creation instant)."""
    from cartwin.demo import demo_bundle_path
    from cartwin.io.fhir import import_fhir
    from cartwin.twin.build import build_twin

    record = import_fhir(demo_bundle_path(), key=DEMO_KEY).records[0]
    version = build_twin(record, now=dt.datetime(2024, 3, 11, 12, tzinfo=UTC))
    return record, version


def _write(tmp_path: Path, document, name: str = "p.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def _minimal(**extra) -> dict:
    packet = {
        "id": "p1",
        "subject": {"id": "s1"},
        "metaData": {"createdBy": "test", "phenopacketSchemaVersion": "2.0"},
    }
    packet.update(extra)
    return packet


# -- real files -------------------------------------------------------------------
def test_real_folder_holds_the_expected_files():
    if not REAL.is_dir():
        pytest.skip(f"real phenopackets not found at {REAL}")
    assert sorted(p.name for p in REAL.glob("*.json")) == sorted(REAL_FACTS)


@needs_real
@pytest.mark.parametrize("name", sorted(REAL_FACTS))
def test_real_file_counts_match_a_direct_json_count(name):
    path = REAL / name
    document = json.loads(path.read_text(encoding="utf-8"))
    result = read_phenopacket(path, key=KEY)
    for element in ELEMENTS:
        counts = result.report.element(element)
        assert counts.read == len(document.get(element, [])), element
        assert counts.used + counts.skipped_total == counts.read, element
    features = sum(
        c.count
        for c in result.report.codings
        if c.resource_type == "phenotypicFeatures"
    )
    assert features == len(document.get("phenotypicFeatures", []))
    assert (
        result.source_sha256
        == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    )


@needs_real
@pytest.mark.parametrize("name", sorted(REAL_FACTS))
def test_real_file_facts_are_pseudonymised(name):
    document = json.loads((REAL / name).read_text(encoding="utf-8"))
    (record,) = read_phenopacket(REAL / name, key=KEY).records
    age, sex, n_events = REAL_FACTS[name]
    assert record.facts.pseudonym == pseudonymise(document["subject"]["id"], KEY)
    assert (record.facts.age_years, record.facts.sex, len(record.events)) == (
        age,
        sex,
        n_events,
    )
    assert document["subject"]["id"] not in json.dumps(
        read_phenopacket(REAL / name, key=KEY).report.to_dict()
    )


@needs_real
def test_covid19_example_events_and_skips():
    result = read_phenopacket(REAL / "ga4gh-schema-covid19.json", key=KEY)
    record = result.records[0]
    oxygen = record.events_of("oxygen")
    # three oxygen dose intervals: 2 and 50 L/min by nasal route, 14 cmH2O PEEP
    assert [(e.dose, e.dose_unit, e.detail) for e in oxygen] == [
        (2.0, "L/min", ""),
        (50.0, "L/min", ""),
        (14.0, "cm[H2O]", "positive_pressure"),
    ]
    (tocilizumab,) = record.events_of("tocilizumab")
    assert tocilizumab.start == dt.datetime(2020, 3, 24, tzinfo=UTC)
    assert tocilizumab.end == dt.datetime(2020, 3, 28, tzinfo=UTC)
    measurements = result.report.element("measurements")
    # both lymphocyte counts are in NCIT:C67245 "Thousand Cells", not a concentration
    assert measurements.used == 0
    assert dict(measurements.skipped) == {
        "unit 'NCIT:C67245' (Thousand Cells) is not UCUM or a known UO/NCIT unit": 2
    }
    assert dict(result.report.element("diseases").skipped) == {
        "excluded": 1,
        "no CAR T disease code": 2,
    }
    assert record.facts.diagnosis is None


@needs_real
def test_cyp21a2_measurements_are_counted_as_unmapped_codes():
    result = read_phenopacket(
        REAL / "store-CYP21A2-PMID_30968594_individual_1.json", key=KEY
    )
    unmapped = [
        c
        for c in result.report.codings
        if c.resource_type == "measurements" and not c.recognised
    ]
    assert sorted(c.code for c in unmapped) == sorted(
        ["1668-3", "2986-8", "2141-0", "2143-6", "2842-3", "2243-4"]
    )
    assert all(c.system == "http://loinc.org" for c in unmapped)


# -- hand-written CAR T fixture ------------------------------------------------
@pytest.fixture(scope="module")
def fixture_import():
    return read_phenopacket(FIXTURE, key=KEY, site_utc_offset_min=60)


def test_fixture_facts(fixture_import):
    facts = fixture_import.records[0].facts
    # age from dateOfBirth 1960-03-02 at infusion 2024-03-11 (64),
    # not from timeAtLastEncounter P65Y
    assert facts == PatientFacts(
        pseudonym=pseudonymise("SITE-PATIENT-4711", KEY),
        age_years=64,
        sex="female",
        diagnosis="Diffuse Large B-Cell Lymphoma",
        diagnosis_code="http://ncithesaurus-stage.nci.nih.gov|C8851",
        disease="LBCL",
        product="axicabtagene ciloleucel",
    )
    assert fixture_import.records[0].site_utc_offset_min == 60


def test_fixture_measurements_are_converted(fixture_import):
    record = fixture_import.records[0]
    (crp,) = record.observations_of("crp")
    assert (crp.value, crp.unit, crp.source_value, crp.source_unit) == (
        31.0,
        "mg/L",
        3.1,
        "mg/dL",
    )
    assert (
        crp.time == dt.datetime(2024, 3, 6, 6, tzinfo=UTC)
        and crp.source_utc_offset_min == 60
    )
    assert record.observations_of("platelets")[0].value == 142.0  # 10*3/uL = 10*9/L
    assert record.observations_of("temperature")[0].unit == "Cel"  # UO:0000027
    (qpcr,) = record.observations_of("cart_qpcr")
    assert (qpcr.value, qpcr.censored) == (250.0, "below")
    skipped = dict(fixture_import.report.element("measurements").skipped)
    assert skipped["assay not mapped"] == 1
    assert any(reason.startswith("time given as age") for reason in skipped)


def test_fixture_events(fixture_import):
    record = fixture_import.records[0]
    assert [e.kind for e in record.events] == [
        "lymphodepletion",
        "lymphodepletion",
        "infusion",
        "tocilizumab",
        "seizure",
        "icu",
    ]
    infusion = record.infusion
    assert (infusion.dose, infusion.dose_unit) == (
        150e6,
        "{cells}",
    )  # 150 x 10*6{cells}
    (tocilizumab,) = record.events_of(
        "tocilizumab"
    )  # DrugCentral id, found by its label
    assert (tocilizumab.dose, tocilizumab.dose_unit) == (560.0, "mg")  # UO:0000022
    assert record.study_day(record.events_of("seizure")[0].start) == 6
    features = fixture_import.report.element("phenotypicFeatures")
    assert (features.read, features.used) == (4, 1)
    assert dict(fixture_import.report.element("biosamples").skipped) == {
        "biosamples are not read by cartwin": 1
    }


def test_snake_case_field_names_read_the_same(tmp_path):
    def snake(value):
        if isinstance(value, dict):
            return {
                "".join("_" + c.lower() if c.isupper() else c for c in k): snake(v)
                for k, v in value.items()
            }
        return [snake(v) for v in value] if isinstance(value, list) else value

    document = json.loads(FIXTURE.read_text(encoding="utf-8"))
    again = read_phenopacket(
        _write(tmp_path, snake(document)), key=KEY, site_utc_offset_min=60
    )
    assert (
        again.records
        == read_phenopacket(FIXTURE, key=KEY, site_utc_offset_min=60).records
    )


def test_cohort_gives_one_record_per_member(tmp_path):
    member = json.loads(FIXTURE.read_text(encoding="utf-8"))
    other = dict(
        member, id="second", subject={"id": "SITE-PATIENT-0815", "sex": "MALE"}
    )
    cohort = {"id": "c1", "members": [member, other], "metaData": member["metaData"]}
    result = read_phenopacket(_write(tmp_path, cohort), key=KEY)
    assert [r.facts.sex for r in result.records] == ["female", "male"]
    assert result.report.n_patients == 2


def test_family_gives_proband_and_relatives(tmp_path):
    member = json.loads(FIXTURE.read_text(encoding="utf-8"))
    relative = _minimal(subject={"id": "SITE-PATIENT-0815", "sex": "MALE"})
    family = {
        "id": "f1",
        "proband": member,
        "relatives": [relative],
        "metaData": member["metaData"],
    }
    result = read_phenopacket(_write(tmp_path, family), key=KEY)
    assert [r.facts.pseudonym for r in result.records] == [
        pseudonymise("SITE-PATIENT-4711", KEY),
        pseudonymise("SITE-PATIENT-0815", KEY),
    ]
    assert "Family" in result.report.validation


def test_subject_id_in_the_file_name_is_replaced(tmp_path):
    document = json.loads(FIXTURE.read_text(encoding="utf-8"))
    result = read_phenopacket(
        _write(tmp_path, document, "SITE-PATIENT-4711.json"), key=KEY
    )
    assert result.source_name == pseudonymise("SITE-PATIENT-4711", KEY) + ".json"
    assert "4711" not in json.dumps(result.report.to_dict())


def test_is_phenopacket_tells_phenopackets_from_fhir():
    assert is_phenopacket(json.loads(FIXTURE.read_text(encoding="utf-8")))
    assert is_phenopacket({"id": "c", "members": [], "metaData": {}})
    assert not is_phenopacket({"resourceType": "Bundle", "type": "collection"})
    assert not is_phenopacket([{"id": "x"}])


# -- codes --------------------------------------------------------------------------
def test_curies_and_codings_round_trip():
    assert curie_to_coding("LOINC:718-7") == ("http://loinc.org", "718-7")
    assert curie_to_coding("rxnorm:612865") == (
        "http://www.nlm.nih.gov/research/umls/rxnorm",
        "612865",
    )
    assert curie_to_coding("HP:0001250") == (
        "http://human-phenotype-ontology.org",
        "HP:0001250",
    )
    assert curie_to_coding("FOO:1", {"FOO": "http://foo.example/cs"}) == (
        "http://foo.example/cs",
        "1",
    )
    for curie in ("LOINC:718-7", "HP:0001250", "NCIT:C8851", "CARTWIN:cart-qpcr"):
        assert coding_to_curie(*curie_to_coding(curie)) == curie


@pytest.mark.parametrize(
    ("curie", "label", "group"),
    [
        ("NCIT:C8851", "", "LBCL"),
        ("MONDO:0009693", "", "MM"),
        ("NCIT:C8936", "", "B-ALL"),
        ("ICD10CM:C90.00", "", "MM"),
        ("ICD10:C83.3", "", "LBCL"),
        ("X:1", "Primary mediastinal large B-cell lymphoma", "LBCL"),
        ("X:2", "T-cell acute lymphoblastic leukemia", "other"),
        ("X:3", "B-cell acute lymphoblastic leukemia", "B-ALL"),
        ("X:4", "Mantle cell lymphoma", "other"),
        ("OMIM:603553", "Hemophagocytic lymphohistiocytosis, familial, 2", None),
    ],
)
def test_disease_groups(curie, label, group):
    system, code = curie_to_coding(curie)
    coding = {"system": system, "code": code, "display": label}
    assert disease_group(coding, load_code_map()) == group


# -- export and round trip ------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(demo):
    record, version = demo
    return export_phenopacket(record, version)


def test_export_is_a_valid_phenopacket(exported, demo):
    message = ParseDict(json.loads(json.dumps(exported)), pps.Phenopacket())
    record, _ = demo
    assert message.subject.id == PSEUDONYM_ID_PREFIX + record.facts.pseudonym
    assert message.meta_data.created_by.startswith("cartwin ")
    assert message.meta_data.phenopacket_schema_version == "2.0"
    prefixes = {r.namespace_prefix for r in message.meta_data.resources}
    used = {m.assay.id.split(":")[0] for m in message.measurements}
    used |= {
        a.treatment.agent.id.split(":")[0]
        for a in message.medical_actions
        if a.HasField("treatment")
    }
    assert used <= prefixes
    assert len(message.measurements) == len(record.observations) + 10  # 3+5+2 outputs
    assert len(message.medical_actions) == len(record.events)


def test_export_carries_twin_outputs(exported, demo):
    _, version = demo
    by_assay = {
        m["assay"]["id"]: m["value"]["quantity"] for m in exported["measurements"]
    }
    cmax = version.outputs["kinetics"]["derived"]["cmax"]
    quantity = by_assay["CARTWIN.TWIN:kinetics-cmax"]
    assert quantity["value"] == cmax["median"]
    assert (quantity["referenceRange"]["low"], quantity["referenceRange"]["high"]) == (
        cmax["lower"],
        cmax["upper"],
    )
    assert (
        by_assay["CARTWIN.TWIN:crs-max-grade"]["value"]
        == version.outputs["crs"]["max_grade"]
    )
    hematotox = by_assay["CARTWIN.TWIN:score-car-hematotox-pre-lymphodepletion"]
    assert hematotox["value"] == version.outputs["scores"][0]["value"]


def test_export_holds_no_identifier_of_the_source(exported):
    from cartwin.demo import demo_bundle_path

    bundle = json.loads(demo_bundle_path().read_text(encoding="utf-8"))
    patient = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Patient"
    )
    text = json.dumps(exported)
    for secret in (
        patient["id"],
        patient["birthDate"],
        patient["name"][0]["family"],
        patient["identifier"][0]["value"],
        patient["address"][0]["city"],
    ):
        assert secret not in text


def test_round_trip_preserves_what_cartwin_reads(exported, demo):
    record, _ = demo
    (back,) = read_phenopacket(
        json.dumps(exported).encode(), key=b"another-key"
    ).records
    assert back.facts == record.facts  # the pseudonym is kept, not hashed again
    assert len(back.observations) == len(record.observations)
    for old, new in zip(record.observations, back.observations):
        assert (
            dataclasses.replace(
                old, source_value=new.source_value, source_unit=new.source_unit
            )
            == new
        )
        assert (new.source_value, new.source_unit) == (old.value, old.unit)
    assert sum(o.censored == "below" for o in back.observations) == 3
    assert len(back.events) == len(record.events)
    for old, new in zip(record.events, back.events):
        assert dataclasses.replace(old, source_id=new.source_id) == new
    assert back.study_day(back.events_of("tocilizumab")[0].start) == 3


def test_round_trip_of_a_site_code_system(tmp_path):
    table = tmp_path / "site.csv"
    table.write_text(
        "system,code,target_type,target,display,note\n"
        "http://hospital.example/lab,CRP-1,observation,crp,CRP local,\n",
        encoding="utf-8",
    )
    when = dt.datetime(2024, 1, 2, 3, 4, tzinfo=UTC)
    record = PatientRecord(
        PatientFacts(pseudonym="0123456789abcdef"),
        observations=(
            Observation(
                "crp",
                when,
                0.0,
                "mg/L",
                source_code="http://hospital.example/lab|CRP-1",
            ),
        ),
    )
    version = _version("0123456789abcdef")
    document = export_phenopacket(record, version, extra_codes=table)
    assert document["measurements"][0]["value"]["quantity"]["value"] == 0.0
    (back,) = read_phenopacket(
        json.dumps(document).encode(), key=KEY, extra_codes=table
    ).records
    assert back.observations[0].source_code == "http://hospital.example/lab|CRP-1"
    assert back.observations[0].value == 0.0


def test_requested_events_are_not_exported():
    start = dt.datetime(2024, 1, 2, tzinfo=UTC)
    record = PatientRecord(
        PatientFacts(pseudonym="0123456789abcdef"),
        events=(
            Event(
                "infusion",
                start,
                name="tisagenlecleucel",
                detail="requested",
                source_code=LOCAL + "|tisagenlecleucel",
            ),
        ),
    )
    assert "medicalActions" not in export_phenopacket(
        record, _version("0123456789abcdef")
    )


def test_event_without_any_code_warns():
    record = PatientRecord(
        PatientFacts(pseudonym="0123456789abcdef"),
        events=(
            Event(
                "consciousness", dt.datetime(2024, 1, 2, tzinfo=UTC), detail="stupor"
            ),
        ),
    )
    with pytest.warns(DataQualityWarning, match="consciousness"):
        document = export_phenopacket(record, _version("0123456789abcdef"))
    assert "phenotypicFeatures" not in document


def test_export_refuses_another_patients_version(demo):
    record, _ = demo
    with pytest.raises(DataError, match="not " + record.facts.pseudonym):
        export_phenopacket(record, _version("fedcba9876543210"))


def _version(pseudonym: str):
    from cartwin.twin.version import TwinVersion

    return TwinVersion(
        pseudonym=pseudonym,
        created_at=dt.datetime(2024, 5, 1, tzinfo=UTC),
        data_hash="0" * 64,
        model_name="m",
        model_version="1",
        package_version="0.1.0",
    )


# -- bad input ---------------------------------------------------------------------
def test_schema_invalid_field_names_file_and_field(tmp_path):
    path = _write(tmp_path, _minimal(subject={"id": "s1", "sexx": "MALE"}), "bad.json")
    with pytest.raises(PhenopacketError) as info:
        read_phenopacket(path, key=KEY)
    assert "bad.json" in str(info.value) and "sexx" in str(info.value)
    assert "Phenopacket.subject" in str(info.value)
    assert isinstance(info.value, DataError)


def test_schema_invalid_enum_and_number(tmp_path):
    with pytest.raises(PhenopacketError, match="Invalid enum value MAN"):
        read_phenopacket(
            _write(tmp_path, _minimal(subject={"id": "s", "sex": "MAN"})), key=KEY
        )
    bad_value = _minimal(
        measurements=[
            {"assay": {"id": "LOINC:1988-5"}, "value": {"quantity": {"value": "high"}}}
        ]
    )
    with pytest.raises(
        PhenopacketError, match=r"measurements\[0\].value.quantity.value"
    ):
        read_phenopacket(_write(tmp_path, bad_value), key=KEY)


def test_malformed_json_names_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"id": "p1",\n "subject": }', encoding="utf-8")
    with pytest.raises(PhenopacketError, match="broken.json: line 2 column 13"):
        read_phenopacket(path, key=KEY)


def test_missing_required_fields_are_listed_together(tmp_path):
    path = _write(tmp_path, {"id": "", "subject": {"sex": "MALE"}})
    with pytest.raises(PhenopacketError) as info:
        read_phenopacket(path, key=KEY)
    assert [p.field for p in info.value.problems] == ["id", "subject.id", "metaData"]


def test_interval_that_ends_before_it_starts_is_an_error(tmp_path):
    action = {
        "treatment": {
            "agent": {"id": "RXNORM:612865"},
            "doseIntervals": [
                {
                    "interval": {
                        "start": "2024-03-13T06:00:00Z",
                        "end": "2024-03-12T06:00:00Z",
                    }
                }
            ],
        }
    }
    path = _write(tmp_path, _minimal(medicalActions=[action]))
    with pytest.raises(PhenopacketError, match="ends before it starts") as info:
        read_phenopacket(path, key=KEY)
    assert (
        info.value.problems[0].field
        == "medicalActions[0].treatment.doseIntervals[0].interval"
    )


def test_ucum_unit_of_the_wrong_dimension_is_an_error(tmp_path):
    measurement = {
        "assay": {"id": "LOINC:1988-5"},
        "value": {"quantity": {"unit": {"id": "UCUM:kg"}, "value": 3.0}},
        "timeObserved": {"timestamp": "2024-03-06T07:00:00Z"},
    }
    with pytest.raises(PhenopacketError, match="'kg'") as info:
        read_phenopacket(
            _write(tmp_path, _minimal(measurements=[measurement])), key=KEY
        )
    assert info.value.problems[0].field == "measurements[0].value.quantity.unit"


def test_car_t_dose_must_be_cells(tmp_path):
    action = {
        "treatment": {
            "agent": {"id": "CARTWIN:tisagenlecleucel"},
            "doseIntervals": [
                {
                    "quantity": {"unit": {"id": "UCUM:mg"}, "value": 1.0},
                    "interval": {
                        "start": "2024-03-13T06:00:00Z",
                        "end": "2024-03-13T06:10:00Z",
                    },
                }
            ],
        }
    }
    with pytest.raises(PhenopacketError, match="number of cells"):
        read_phenopacket(_write(tmp_path, _minimal(medicalActions=[action])), key=KEY)


def test_non_finite_values_are_errors(tmp_path):
    measurement = {
        "assay": {"id": "LOINC:1988-5"},
        "value": {"quantity": {"unit": {"id": "UCUM:mg/L"}, "value": "NaN"}},
        "timeObserved": {"timestamp": "2024-03-06T07:00:00Z"},
    }
    action = {
        "treatment": {
            "agent": {"id": "RXNORM:612865"},
            "doseIntervals": [
                {
                    "quantity": {"unit": {"id": "UCUM:mg"}, "value": "Infinity"},
                    "interval": {
                        "start": "2024-03-13T06:00:00Z",
                        "end": "2024-03-13T07:00:00Z",
                    },
                }
            ],
        }
    }
    path = _write(
        tmp_path, _minimal(measurements=[measurement], medicalActions=[action])
    )
    with pytest.raises(PhenopacketError) as info:
        read_phenopacket(path, key=KEY)
    assert [(p.code, p.field) for p in info.value.problems] == [
        ("non-finite", "measurements[0].value.quantity.value"),
        ("non-finite", "medicalActions[0].treatment.doseIntervals[0].quantity.value"),
    ]
