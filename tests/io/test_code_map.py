"""The code table: shipped rows, site extensions and overrides, bad rows."""

from __future__ import annotations

import csv
import json
import os
from importlib import resources

import pytest

from cartwin.io import CodeMapError, import_fhir, load_code_map
from cartwin.io.codes import CODE_MAP_ENV

HEADER = "system,code,target_type,target,display,note\n"
LAB = "http://hospital.example/lab"


def _shipped_rows() -> list[dict]:
    text = resources.files("cartwin.data.codes").joinpath("codes.csv").read_text()
    return list(csv.DictReader(text.splitlines()))


def test_shipped_table_loads_every_row(monkeypatch):
    monkeypatch.delenv(CODE_MAP_ENV, raising=False)
    codes = load_code_map()
    rows = _shipped_rows()
    assert len(codes) == len(rows)
    for row in rows:
        mapping = codes.lookup(row["system"], row["code"])
        assert (mapping.target_type, mapping.target) == (
            row["target_type"],
            row["target"],
        )
    vasopressin = codes.lookup("http://www.nlm.nih.gov/research/umls/rxnorm", "11149")
    assert (vasopressin.kind, vasopressin.detail) == ("vasopressor", "vasopressin")
    assert codes.lookup("http://loinc.org/", " 1988-5 ").target == "crp"
    assert codes.lookup("http://loinc.org", "0000-0") is None


def test_site_tables_extend_and_override(tmp_path, monkeypatch):
    env_table = tmp_path / "env.csv"
    env_table.write_text(
        HEADER + f"{LAB},CRP,observation,crp,CRP local,\n"
        "http://snomed.info/sct,57485005,event,oxygen:high_flow,O2,site rule\n"
    )
    param_table = tmp_path / "param.csv"
    param_table.write_text(HEADER + f"{LAB},CRP,observation,il6,deliberate override,\n")
    monkeypatch.setenv(CODE_MAP_ENV, os.pathsep.join([str(env_table), ""]))
    codes = load_code_map()
    assert codes.lookup(LAB, "CRP").target == "crp"
    assert codes.lookup("http://snomed.info/sct", "57485005").detail == "high_flow"
    assert codes.sources[1:] == (str(env_table),)
    codes = load_code_map(param_table)
    assert codes.lookup(LAB, "CRP").target == "il6"  # the parameter is read last
    assert codes.lookup(LAB, "CRP").origin == f"{param_table}:2"


def test_import_uses_site_codes(tmp_path, key, fhir, monkeypatch):
    monkeypatch.delenv(CODE_MAP_ENV, raising=False)
    table = tmp_path / "site.csv"
    table.write_text(HEADER + f"{LAB},CRP,observation,crp,CRP local,\n")
    resource = fhir.observation("local", "CRP", 4.0, "mg/dL", system=LAB)
    document = json.dumps(resource).encode()
    unmapped = import_fhir(document, key=key)
    assert unmapped.records[0].observations == ()
    assert unmapped.report.coding_count(LAB, "CRP", recognised=False) == 1
    mapped = import_fhir(document, key=key, extra_codes=[table])
    (obs,) = mapped.records[0].observations
    assert (obs.quantity, obs.value, obs.source_code) == ("crp", 40.0, f"{LAB}|CRP")
    assert mapped.report.coding_count(LAB, "CRP", recognised=True) == 1
    assert mapped.report.code_maps[-1] == str(table)


def test_bad_rows_are_listed_together(tmp_path):
    table = tmp_path / "bad.csv"
    table.write_text(
        HEADER
        + f"{LAB},A,observation,sodium,,\n"
        + f"{LAB},B,event,party,,\n"
        + f"{LAB},C,measurement,crp,,\n"
        + f"{LAB},,observation,crp,,\n"
        + f"{LAB},E,diagnosis,CLL,,\n"
        + f"{LAB},A,observation,crp,,\n"
    )
    with pytest.raises(CodeMapError) as caught:
        load_code_map(table)
    message = str(caught.value)
    for part in (
        f"{table}:2: column target = 'sodium'",
        f"{table}:3: column target = 'party'",
        f"{table}:4: column target_type = 'measurement'",
        f"{table}:5: column code is empty",
        f"{table}:6: column target = 'CLL'",
        f"{table}:7: duplicate of {table}:2",
    ):
        assert part in message


def test_missing_columns_and_missing_file(tmp_path):
    table = tmp_path / "short.csv"
    table.write_text("system,code\nx,y\n")
    with pytest.raises(CodeMapError, match="missing column.*target_type, target"):
        load_code_map(table)
    with pytest.raises(CodeMapError, match="cannot read code map"):
        load_code_map(tmp_path / "absent.csv")


def test_site_diagnosis_rows(tmp_path, key, fhir, monkeypatch):
    monkeypatch.delenv(CODE_MAP_ENV, raising=False)
    table = tmp_path / "dx.csv"
    table.write_text(HEADER + "http://snomed.info/sct,128875000,diagnosis,other,MCL,\n")
    condition = {
        "resourceType": "Condition",
        "id": "c",
        "subject": {"reference": "Patient/p"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "128875000"}]},
    }
    document = json.dumps(condition).encode()
    assert import_fhir(document, key=key).records[0].facts.disease is None
    facts = import_fhir(document, key=key, extra_codes=table).records[0].facts
    assert facts.disease == "other"
