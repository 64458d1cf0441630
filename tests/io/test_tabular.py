"""Tests of cartwin.io.tabular: long and wide CSV, XLSX and Parquet tables.

Every table is written inside the test (``tmp_path``) so that what it holds is
visible next to what is asserted. Unit conversions are UCUM definitions, exact
up to floating point (relative tolerance 1e-12):
1 mg/dL = 10 mg/L; 1 /uL = 10^6 /L = 10^-3 x 10^9/L; degF to Cel is
(F - 32) x 5/9, so 100.4 degF = 38.0 Cel and 102.2 degF = 39.0 Cel
(The Unified Code for Units of Measure, https://ucum.org/ucum, sections 4.4
and 4.5; temperature with 1e-9 tolerance because pint's offset conversion
rounds in the last digits).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import openpyxl
import pytest

import cartwin
from cartwin.errors import DataError, UnitError
from cartwin.io.tabular import (
    TabularImportError,
    TabularMappingError,
    TabularUnitError,
    export_tabular,
    load_mapping,
    read_tabular,
)
from cartwin.io.tabular_cells import CellError, parse_instant, parse_number
from cartwin.io.tabular_grid import column_letter
from cartwin.record.model import Observation, Event, PatientFacts, PatientRecord
from cartwin.record.pseudonym import pseudonymise
from cartwin.store import open_store

UTC = dt.timezone.utc
EXAMPLES = Path(cartwin.__file__).parent / "data" / "examples"
REL = 1e-12


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


# -- writing test tables ------------------------------------------------------------
def write_csv(path: Path, text: str) -> Path:
    path.write_text(text.lstrip("\n"), encoding="utf-8")
    return path


def write_xlsx(path: Path, rows: list, *, sheet: str = "labs", merges=(),
               first_sheet: str | None = "README") -> Path:
    book = openpyxl.Workbook()
    if first_sheet:
        book.active.title = first_sheet
        book.active.append(["this sheet is not data"])
        ws = book.create_sheet(sheet)
    else:
        ws = book.active
        ws.title = sheet
    for row in rows:
        ws.append(row)
    for merge in merges:
        ws.merge_cells(merge)
    book.save(path)
    return path


def write_parquet(path: Path, select: str) -> Path:
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"COPY ({select}) TO '{path}' (FORMAT PARQUET)")
    finally:
        con.close()
    return path


def write_mapping(path: Path, text: str) -> Path:
    path.write_text(text.lstrip("\n"), encoding="utf-8")
    return path


def by_quantity(record: PatientRecord) -> dict[str, list[Observation]]:
    out: dict[str, list[Observation]] = {}
    for obs in record.observations:
        out.setdefault(obs.quantity, []).append(obs)
    return out


def only_problem(excinfo) -> object:
    assert len(excinfo.value.problems) == 1, excinfo.value
    return excinfo.value.problems[0]


# -- long layout ----------------------------------------------------------------------
LONG_CSV = """
Patient ID,Sample time,Test,Result,Unit,Infusion date,Product,LD start,LD end
MRN-0001,2024-03-01 08:00,CRP,<0.5,mg/dL,2024-03-06,axi-cel,2024-03-01,2024-03-03
MRN-0001,2024-03-07 07:30,CRP,12,mg/L,2024-03-06,axi-cel,,
MRN-0001,2024-03-07 07:30,PLT,152000,/uL,,,,
MRN-0001,2024-03-08T07:30:00+02:00,PLT,98,10*9/L,,,,
MRN-0001,2024-03-07 00:30,TEMP,100.4,[degF],,,,
MRN-0001,2024-03-07 07:30,NA,139,mmol/L,,,,

MRN-0002,2024-04-02,CRP,0.8,,2024-04-05,tisa-cel,,
"""


@pytest.fixture
def long_import(tmp_path, key):
    table = write_csv(tmp_path / "labs.csv", LONG_CSV)
    return read_tabular(table, EXAMPLES / "tabular_long.toml", key=key)


def test_long_csv_converts_mixed_units_to_canonical(long_import, key):
    first, second = long_import.records
    assert first.facts.pseudonym == pseudonymise("MRN-0001", key)
    obs = by_quantity(first)
    assert [(o.value, o.unit) for o in obs["crp"]] == [(5.0, "mg/L"), (12.0, "mg/L")]
    assert [o.value for o in obs["platelets"]] == pytest.approx([152.0, 98.0], rel=REL)
    assert obs["platelets"][0].unit == "10*9/L"
    assert obs["temperature"][0].value == pytest.approx(38.0, rel=1e-9)
    assert obs["temperature"][0].unit == "Cel"
    # no unit cell: the mapping's unit (mg/dL) applies.
    assert by_quantity(second)["crp"][0].value == pytest.approx(8.0, rel=REL)


def test_long_csv_times_use_site_zone_and_keep_given_zones(long_import):
    obs = by_quantity(long_import.records[0])
    assert obs["crp"][1].time == utc(2024, 3, 7, 6, 30)
    assert obs["crp"][1].source_utc_offset_min == 60
    assert obs["platelets"][1].time == utc(2024, 3, 8, 5, 30)
    assert obs["platelets"][1].source_utc_offset_min == 120
    # a date without time is placed at 12:00 site time.
    assert long_import.records[1].observations[0].time == utc(2024, 4, 2, 11)


def test_long_csv_events_give_study_days(long_import):
    first = long_import.records[0]
    assert first.infusion_time == utc(2024, 3, 6, 11)
    assert first.facts.product == "axi-cel"
    (ld,) = first.events_of("lymphodepletion")
    assert (ld.start, ld.end) == (utc(2024, 3, 1, 11), utc(2024, 3, 3, 11))
    assert ld.name == "fludarabine/cyclophosphamide"
    obs = by_quantity(first)
    assert first.study_day(obs["crp"][0].time) == -5
    # 00:30 site time on 7 March is 23:30 UTC on 6 March: study day 1.
    temperature = obs["temperature"][0]
    assert temperature.time == utc(2024, 3, 6, 23, 30)
    assert first.study_day(temperature.time) == 1


def test_long_csv_censoring_and_report(long_import):
    crp = by_quantity(long_import.records[0])["crp"][0]
    assert (crp.censored, crp.source_value, crp.source_unit) == ("below", 0.5, "mg/dL")
    report = long_import.report
    assert report.n_patients == 2 and report.n_observations == 6
    assert report.n_events == 3
    assert dict(report.quantities) == {"crp": 3, "platelets": 2, "temperature": 1}
    assert dict(report.skipped) == {"blank row": 1, "unmapped quantity 'NA'": 1}
    assert report.n_rows == 8


def test_long_censored_column_and_upper_limit(tmp_path, key):
    table = write_csv(tmp_path / "t.csv", """
id,when,q,v,u,flag
p1,2024-03-01T08:00Z,FERR,5000,ng/mL,above
p1,2024-03-02T08:00Z,FERR,>5000,ng/mL,
p1,2024-03-03T08:00Z,CRP,0.5,mg/dL,<
p1,2024-03-04T08:00Z,CRP,7.5,mg/L,
""")
    mapping = write_mapping(tmp_path / "m.toml", """
layout = "long"
id_column = "id"
[time]
anchor = "date"
column = "when"
[long]
quantity_column = "q"
value_column = "v"
unit_column = "u"
censored_column = "flag"
[columns]
FERR = "ferritin"
CRP = "crp"
""")
    (record,) = read_tabular(table, mapping, key=key).records
    flags = [(o.quantity, o.value, o.censored) for o in record.observations]
    assert flags == [("ferritin", 5000.0, "above"), ("ferritin", 5000.0, "above"),
                     ("crp", 5.0, "below"), ("crp", 7.5, None)]


LONG_XLSX_MAPPING = """
layout = "long"
id_column = "Patient"
sheet = "labs"
[time]
anchor = "date"
column = "Date"
utc_offset_min = 60
[long]
quantity_column = "Test"
value_column = "Result"
unit_column = "Unit"
[columns.CRP]
quantity = "crp"
[columns.PLT]
quantity = "platelets"
[events.infusion]
start_column = "Infusion"
name_column = "Product"
"""
XLSX_HEADER = ["Patient", "Date", "Test", "Result", "Unit", "Infusion", "Product"]


def test_long_xlsx_reads_native_cells_from_the_named_sheet(tmp_path, key):
    table = write_xlsx(tmp_path / "labs.xlsx", [
        XLSX_HEADER,
        [101, dt.datetime(2024, 3, 7, 7, 30), "CRP", 1.5, "mg/dL",
         dt.date(2024, 3, 6), "cilta-cel"],
        [101, dt.date(2024, 3, 8), "PLT", 45000, "/uL", None, None],
        [101, dt.datetime(2024, 3, 9, 6), "CRP", "<0.5", "mg/dL", None, None],
        [None, None, None, None, None, None, None],
        [102, "2024-04-01T09:00:00+02:00", "PLT", 210, "10*9/L", "2024-04-03",
         "ide-cel"],
    ])  # fmt: skip
    mapping = write_mapping(tmp_path / "m.toml", LONG_XLSX_MAPPING)
    result = read_tabular(table, mapping, key=key)
    first, second = result.records
    assert first.facts.pseudonym == pseudonymise("101", key)
    values = [(o.quantity, o.time, o.value, o.censored) for o in first.observations]
    assert values == [
        ("crp", utc(2024, 3, 7, 6, 30), pytest.approx(15.0, rel=REL), None),
        ("platelets", utc(2024, 3, 8, 11), pytest.approx(45.0, rel=REL), None),
        ("crp", utc(2024, 3, 9, 5), pytest.approx(5.0, rel=REL), "below"),
    ]
    assert first.infusion_time == utc(2024, 3, 6, 11)
    assert second.observations[0].time == utc(2024, 4, 1, 7)
    assert result.report.sheet == "labs"
    # content-based ids (quantity, mapped name, UTC instant), not cell D2
    expected_id = "tabular:crp:CRP@2024-03-07T06:30:00+00:00"
    assert first.observations[0].source_id == expected_id


def test_long_parquet_reads_typed_columns(tmp_path, key):
    table = write_parquet(tmp_path / "labs.parquet", """
SELECT * FROM (VALUES
  ('p1', TIMESTAMPTZ '2024-03-07 07:30:00+00', 'CRP', '2.5', 'mg/dL',
   DATE '2024-03-06', 'axi-cel'),
  ('p1', TIMESTAMPTZ '2024-03-08 07:30:00+00', 'CRP', '<0.5', 'mg/dL',
   DATE '2024-03-06', 'axi-cel'),
  ('p1', TIMESTAMPTZ '2024-03-08 07:30:00+00', 'PLT', '87', '10*9/L', NULL, NULL)
) t("Patient", "Date", "Test", "Result", "Unit", "Infusion", "Product")
""")
    mapping = write_mapping(tmp_path / "m.toml", LONG_XLSX_MAPPING)
    (record,) = read_tabular(table, mapping, key=key).records
    assert [(o.quantity, o.value, o.censored) for o in record.observations] == [
        ("crp", pytest.approx(25.0, rel=REL), None),
        ("crp", pytest.approx(5.0, rel=REL), "below"),
        ("platelets", 87.0, None),
    ]
    assert record.observations[0].time == utc(2024, 3, 7, 7, 30)
    assert record.infusion_time == utc(2024, 3, 6, 11)
    assert record.study_day(record.observations[-1].time) == 2


def test_long_day_offsets_from_infusion(tmp_path, key):
    table = write_csv(tmp_path / "days.csv", """
subject;day;test;value;infused
A;-5;CRP;3,5;06.03.2024
A;0;CRP;12;06.03.2024
A;7;CRP;<0,5;06.03.2024
""")
    mapping = write_mapping(tmp_path / "m.toml", """
layout = "long"
id_column = "subject"
delimiter = ";"
decimal = ","
[time]
anchor = "infusion_day"
column = "day"
utc_offset_min = -300
date_format = "%d.%m.%Y"
default_time = "09:00"
[long]
quantity_column = "test"
value_column = "value"
[columns.CRP]
quantity = "crp"
unit = "mg/L"
[events.infusion]
start_column = "infused"
name = "tisagenlecleucel"
""")
    (record,) = read_tabular(table, mapping, key=key).records
    days = [record.study_day(o.time) for o in record.observations]
    assert days == [-5, 0, 7]
    assert [o.value for o in record.observations] == [3.5, 12.0, 0.5]
    assert record.observations[2].censored == "below"
    # 09:00 at UTC-5 is 14:00 UTC.
    assert record.observations[0].time == utc(2024, 3, 1, 14)
    assert record.facts.product == "tisagenlecleucel"


def test_day_offsets_use_the_infusion_zone_without_a_site_offset(tmp_path, key):
    # No site offset in the mapping: the infusion's own zone (+02:00) places
    # day offsets; 00:30 site time on 6 March is still 5 March in UTC.
    table = write_csv(tmp_path / "days.csv", """
subject,day,test,value,infused
A,1,CRP,12,2024-03-05T00:30:00+02:00
""")
    mapping = write_mapping(tmp_path / "m.toml", """
layout = "long"
id_column = "subject"
[time]
anchor = "infusion_day"
column = "day"
[long]
quantity_column = "test"
value_column = "value"
[columns.CRP]
quantity = "crp"
unit = "mg/L"
[events.infusion]
start_column = "infused"
""")
    (record,) = read_tabular(table, mapping, key=key).records
    assert record.infusion_time == utc(2024, 3, 4, 22, 30)
    assert record.observations[0].time == utc(2024, 3, 6, 10)
    assert record.site_utc_offset_min is None
    assert record.study_day(record.observations[0].time) == 1


# -- wide layout ----------------------------------------------------------------------
WIDE_CSV = """
,,,Baseline,,,Day 7,,
Subject,Infusion date,Product,Date,CRP,PLT,Date,CRP,PLT
,,,,mg/L,10*9/L,,mg/dL,/uL
S-001,2024-03-06,axi-cel,2024-03-01,3.1,210,2024-03-13,<0.5,98000
S-002,2024-04-05,tisa-cel,2024-03-31,45,,2024-04-12,1.2,
"""


def test_wide_csv_three_header_rows_and_a_date_per_visit(tmp_path, key):
    table = write_csv(tmp_path / "visits.csv", WIDE_CSV)
    result = read_tabular(table, EXAMPLES / "tabular_wide.toml", key=key)
    first, second = result.records
    got = [(o.quantity, o.time, o.value, o.censored) for o in first.observations]
    assert got == [
        ("crp", utc(2024, 3, 1, 11), pytest.approx(3.1, rel=REL), None),
        ("platelets", utc(2024, 3, 1, 11), pytest.approx(210.0, rel=REL), None),
        ("crp", utc(2024, 3, 13, 11), pytest.approx(5.0, rel=REL), "below"),
        ("platelets", utc(2024, 3, 13, 11), pytest.approx(98.0, rel=REL), None),
    ]
    assert [first.study_day(o.time) for o in first.observations] == [-5, -5, 7, 7]
    assert [o.value for o in by_quantity(second)["crp"]] == pytest.approx([45.0, 12.0])
    assert dict(result.report.skipped) == {"blank value": 2}
    assert result.report.layout == "wide"


WIDE_DAY_MAPPING = """
layout = "wide"
id_column = "Subject"
header_rows = 3
[wide]
visit_row = 1
name_row = 2
unit_row = 3
[time]
anchor = "infusion_day"
utc_offset_min = 60
visit_day_pattern = 'Day (?P<day>-?\\d+)'
visit_days = { "Baseline" = -5 }
[columns.CRP]
quantity = "crp"
unit = "mg/L"
[columns.PLT]
quantity = "platelets"
[columns.Temp]
quantity = "temperature"
[events.infusion]
start_column = "Infusion date"
name_column = "Product"
"""


def test_wide_xlsx_merged_visits_and_day_offsets(tmp_path, key):
    table = write_xlsx(tmp_path / "visits.xlsx", [
        [None, None, None, "Baseline", None, None, "Day 0", None, None, "Day 7"],
        ["Subject", "Infusion date", "Product",
         "CRP", "PLT", "Temp", "CRP", "PLT", "Temp", "CRP"],
        [None, None, None, "mg/dL", "10*9/L", "[degF]", None, "/uL", "[degF]", "mg/dL"],
        ["S-001", dt.date(2024, 3, 6), "axi-cel",
         0.9, 180, 98.6, 25, 150000, 102.2, "<0.5"],
    ], merges=("D1:F1", "G1:I1"), first_sheet=None)  # fmt: skip
    mapping = write_mapping(tmp_path / "m.toml", WIDE_DAY_MAPPING)
    (record,) = read_tabular(table, mapping, key=key).records
    obs = by_quantity(record)
    assert [record.study_day(o.time) for o in obs["crp"]] == [-5, 0, 7]
    # CRP unit cell blank on day 0: the mapping's mg/L applies.
    assert [o.value for o in obs["crp"]] == pytest.approx([9.0, 25.0, 5.0], rel=REL)
    assert [o.value for o in obs["platelets"]] == pytest.approx([180.0, 150.0], rel=REL)
    temperatures = [o.value for o in obs["temperature"]]
    assert temperatures == pytest.approx([37.0, 39.0], rel=1e-9)
    assert obs["crp"][0].time == utc(2024, 3, 1, 11)
    assert obs["crp"][2].source_id == "tabular:crp:CRP@2024-03-13T11:00:00+00:00"


def test_wide_parquet_header_pattern_and_a_date_per_value(tmp_path, key):
    table = write_parquet(tmp_path / "visits.parquet", """
SELECT 'S-9' AS subject, DATE '2024-05-10' AS infusion, 'liso-cel' AS product,
       TIMESTAMP '2024-05-05 08:00' AS "d-5_crp_time", 4.0 AS "d-5_crp",
       TIMESTAMP '2024-05-11 20:00' AS "d1_temp_time", '103.1' AS "d1_temp",
       TIMESTAMP '2024-05-11 06:00' AS "d1_crp_time", 88.5 AS "d1_crp",
       'ignored' AS "d1_comment"
""")
    mapping = write_mapping(tmp_path / "m.toml", """
layout = "wide"
id_column = "subject"
[wide]
header_pattern = '(?P<visit>d-?\\d+)_(?P<name>.+)'
[time]
anchor = "date"
utc_offset_min = 120
[columns.crp]
quantity = "crp"
unit = "mg/L"
date_column = "crp_time"
[columns.temp]
quantity = "temperature"
unit = "[degF]"
date_column = "temp_time"
[events.infusion]
start_column = "infusion"
name_column = "product"
""")
    result = read_tabular(table, mapping, key=key)
    (record,) = result.records
    got = [(o.quantity, o.time, o.value) for o in record.observations]
    assert got == [
        ("crp", utc(2024, 5, 5, 6), 4.0),
        ("crp", utc(2024, 5, 11, 4), 88.5),
        ("temperature", utc(2024, 5, 11, 18), pytest.approx(39.5, rel=1e-9)),
    ]
    assert [record.study_day(o.time) for o in record.observations] == [-5, 1, 1]
    assert result.report.ignored_columns == ("d1 | comment",)


def test_wide_xlsx_title_rows_and_headers_merged_down(tmp_path, key):
    table = write_xlsx(tmp_path / "crf.xlsx", [
        ["ZUMA-like registry export, generated 2024-06-01"],
        ["Subject", "Infusion", "Baseline", None, "Day 14", None, "Dose"],
        [None, None, "Date", "CRP", "Date", "CRP", None],
        [None, None, None, "mg/L", None, "mg/L", "10*6{cells}"],
        ["S-7", "2024-03-06T14:00:00+01:00", dt.date(2024, 3, 1), 2.0,
         dt.date(2024, 3, 20), 4.5, 410],
    ], merges=("A2:A4", "B2:B4", "C2:D2", "E2:F2", "G2:G4"), first_sheet=None)
    mapping = write_mapping(tmp_path / "m.toml", """
layout = "wide"
id_column = "Subject"
skip_rows = 1
header_rows = 3
[wide]
visit_row = 1
name_row = 2
unit_row = 3
[time]
anchor = "date"
column = "Date"
utc_offset_min = 60
[columns]
CRP = "crp"
[events.infusion]
start_column = "Infusion"
dose_column = "Dose"
dose_unit = "10*6{cells}"
name = "axicabtagene ciloleucel"
""")
    (record,) = read_tabular(table, mapping, key=key).records
    assert [record.study_day(o.time) for o in record.observations] == [-5, 14]
    infusion = record.infusion
    assert (infusion.start, infusion.dose, infusion.dose_unit) == (
        utc(2024, 3, 6, 13), 410e6, "{cells}")
    assert record.facts.product == "axicabtagene ciloleucel"


def test_example_mappings_load():
    assert load_mapping(EXAMPLES / "tabular_long.toml").layout == "long"
    wide = load_mapping(EXAMPLES / "tabular_wide.toml")
    assert (wide.header_rows, wide.wide.visit_row, wide.wide.unit_row) == (3, 1, 3)


# -- errors ---------------------------------------------------------------------------
def xlsx_error(tmp_path, key, rows, mapping=LONG_XLSX_MAPPING):
    table = write_xlsx(tmp_path / "labs.xlsx", [XLSX_HEADER, *rows])
    with pytest.raises(TabularImportError) as excinfo:
        read_tabular(table, write_mapping(tmp_path / "m.toml", mapping), key=key)
    return excinfo


GOOD = [7, "2024-03-07T08:00Z", "CRP", 1.0, "mg/dL", "2024-03-06", "axi-cel"]


def replaced(row: list, index: int, value) -> list:
    row = list(row)
    row[index] = value
    return row


def test_error_non_numeric_value_names_sheet_row_column_value(tmp_path, key):
    excinfo = xlsx_error(tmp_path, key, [GOOD, replaced(GOOD, 3, "1.2.3")])
    problem = only_problem(excinfo)
    assert (problem.code, problem.sheet, problem.row, problem.column) == (
        "non-numeric", "labs", 3, "D")
    assert problem.header == "Result" and problem.value == "'1.2.3'"
    assert "labs.xlsx, sheet 'labs', row 3, column D ('Result'): value '1.2.3'" in str(
        excinfo.value)


def test_error_unknown_unit_is_a_unit_error(tmp_path, key):
    excinfo = xlsx_error(tmp_path, key, [replaced(GOOD, 4, "bananas/L")])
    assert isinstance(excinfo.value, TabularUnitError)
    assert isinstance(excinfo.value, UnitError)
    problem = only_problem(excinfo)
    assert (problem.code, problem.row, problem.column, problem.header) == (
        "unit", 2, "E", "Unit")
    assert "'bananas/L'" in str(excinfo.value) and "sheet 'labs'" in str(excinfo.value)


def test_error_missing_id(tmp_path, key):
    problem = only_problem(xlsx_error(tmp_path, key, [GOOD, replaced(GOOD, 0, None)]))
    assert (problem.code, problem.row, problem.column, problem.header) == (
        "missing-id", 3, "A", "Patient")
    assert "row 3, column A ('Patient'): value ''" in str(problem)


@pytest.mark.parametrize("text", ["2024-13-45", "yesterday", "2024-03"])
def test_error_date_not_parseable(tmp_path, key, text):
    problem = only_problem(xlsx_error(tmp_path, key, [replaced(GOOD, 1, text)]))
    assert (problem.code, problem.row, problem.column, problem.value) == (
        "date-invalid", 2, "B", repr(text))
    assert f"sheet 'labs', row 2, column B ('Date'): value {text!r}" in str(problem)


def test_error_time_without_zone_and_no_site_offset(tmp_path, key):
    mapping = LONG_XLSX_MAPPING.replace("utc_offset_min = 60", "")
    row = replaced(GOOD, 1, dt.datetime(2024, 3, 7, 8))
    row = replaced(row, 5, "2024-03-06T10:00Z")
    problem = only_problem(xlsx_error(tmp_path, key, [row], mapping))
    assert (problem.code, problem.row, problem.column) == ("date-no-zone", 2, "B")
    assert "utc_offset_min" in problem.message
    assert "value datetime.datetime(2024, 3, 7, 8, 0)" in str(problem)


def test_error_mapping_refers_to_missing_column(tmp_path, key):
    mapping = LONG_XLSX_MAPPING.replace('value_column = "Result"',
                                        'value_column = "Resultat"')
    problem = only_problem(xlsx_error(tmp_path, key, [GOOD], mapping))
    assert (problem.code, problem.sheet, problem.row, problem.header) == (
        "missing-column", "labs", 1, "Resultat")
    assert "[long] value_column" in problem.message and "'Result'" in problem.message


def test_error_duplicate_header(tmp_path, key):
    table = write_csv(tmp_path / "dup.csv", """
Patient,Date,Test,Result,Unit,Result,Infusion,Product
7,2024-03-07T08:00Z,CRP,1,mg/dL,2,2024-03-06,axi-cel
""")
    mapping = write_mapping(tmp_path / "m.toml", LONG_XLSX_MAPPING)
    with pytest.raises(TabularImportError) as excinfo:
        read_tabular(table, mapping, key=key)
    codes = {(p.code, p.row, p.column, p.header) for p in excinfo.value.problems}
    assert ("duplicate-header", 1, "F", "Result") in codes
    assert "dup.csv, row 1, column F ('Result'): value 'Result'" in str(excinfo.value)


def test_error_wide_mapped_column_in_no_visit(tmp_path, key):
    table = write_csv(tmp_path / "w.csv", WIDE_CSV.replace("PLT", "Platelets"))
    with pytest.raises(TabularImportError) as excinfo:
        read_tabular(table, EXAMPLES / "tabular_wide.toml", key=key)
    problem = only_problem(excinfo)
    assert (problem.code, problem.row, problem.header) == ("missing-column", 2, "PLT")
    assert "Baseline" in problem.message


def test_error_wide_duplicate_header_in_a_visit(tmp_path, key):
    text = WIDE_CSV.replace("Date,CRP,PLT,Date,CRP,PLT", "Date,CRP,CRP,Date,CRP,PLT")
    table = write_csv(tmp_path / "w.csv", text)
    with pytest.raises(TabularImportError) as excinfo:
        read_tabular(table, EXAMPLES / "tabular_wide.toml", key=key)
    problem = excinfo.value.problems[0]
    assert (problem.code, problem.row, problem.column) == ("duplicate-header", 2, "F")
    assert problem.header == "Baseline | CRP"


def test_all_problems_are_raised_together(tmp_path, key):
    rows = [replaced(GOOD, 3, "high"), replaced(GOOD, 1, "never"),
            replaced(GOOD, 4, "furlong"), replaced(GOOD, 5, "2024-03-07")]
    excinfo = xlsx_error(tmp_path, key, rows)
    got = [(p.code, p.row, p.column) for p in excinfo.value.problems]
    assert got == [("conflict", 5, "F"), ("non-numeric", 2, "D"),
                   ("date-invalid", 3, "B"), ("unit", 4, "E")]
    assert not isinstance(excinfo.value, UnitError)
    assert "4 problem(s) in labs.xlsx" in str(excinfo.value)


def test_error_day_offsets_without_infusion(tmp_path, key):
    table = write_xlsx(tmp_path / "v.xlsx", [
        [None, None, None, "Day 0", None, None],
        ["Subject", "Infusion date", "Product", "CRP", "PLT", "Temp"],
        [None, None, None, "mg/L", "10*9/L", "Cel"],
        ["S-1", None, None, 3, 100, 37],
    ], first_sheet=None)  # fmt: skip
    mapping = write_mapping(tmp_path / "m.toml", WIDE_DAY_MAPPING)
    with pytest.raises(TabularImportError) as excinfo:
        read_tabular(table, mapping, key=key)
    problem = only_problem(excinfo)
    assert (problem.code, problem.row, problem.column) == ("missing-infusion", 4, "D")


def test_error_event_ends_before_it_starts(tmp_path, key):
    table = write_csv(tmp_path / "labs.csv", LONG_CSV.replace(
        "2024-03-01,2024-03-03", "2024-03-03,2024-03-01"))
    with pytest.raises(TabularImportError) as excinfo:
        read_tabular(table, EXAMPLES / "tabular_long.toml", key=key)
    problem = only_problem(excinfo)
    assert (problem.code, problem.row, problem.column, problem.header) == (
        "date-order", 2, "I", "LD end")


def test_error_unmapped_quantity_when_asked(tmp_path, key):
    text = (EXAMPLES / "tabular_long.toml").read_text(encoding="utf-8")
    mapping = write_mapping(tmp_path / "m.toml", 'unmapped = "error"\n' + text)
    table = write_csv(tmp_path / "labs.csv", LONG_CSV)
    with pytest.raises(TabularImportError) as excinfo:
        read_tabular(table, mapping, key=key)
    problem = only_problem(excinfo)
    assert (problem.code, problem.row, problem.column, problem.value) == (
        "unmapped-quantity", 7, "C", "'NA'")


def test_error_censoring_column_disagrees_with_value(tmp_path, key):
    table = write_csv(tmp_path / "t.csv", """
id,when,q,v,flag
p1,2024-03-01T08:00Z,CRP,<5,above
p1,2024-03-01T08:00Z,CRP,5,sometimes
""")
    mapping = write_mapping(tmp_path / "m.toml", """
layout = "long"
id_column = "id"
[time]
anchor = "date"
column = "when"
[long]
quantity_column = "q"
value_column = "v"
censored_column = "flag"
[columns.CRP]
quantity = "crp"
unit = "mg/L"
""")
    with pytest.raises(TabularImportError) as excinfo:
        read_tabular(table, mapping, key=key)
    got = [(p.code, p.row, p.column, p.value) for p in excinfo.value.problems]
    assert got == [("conflict", 2, "E", "'above'"),
                   ("censored-invalid", 3, "E", "'sometimes'")]


def test_error_missing_sheet(tmp_path, key):
    mapping = LONG_XLSX_MAPPING.replace('sheet = "labs"', 'sheet = "Labs 2024"')
    problem = only_problem(xlsx_error(tmp_path, key, [GOOD], mapping))
    assert problem.code == "io" and "'Labs 2024'" in problem.message
    assert "'labs'" in problem.message


def test_bad_table_leaves_the_store_untouched(tmp_path, key, long_import):
    with open_store(":memory:") as store:
        store.import_records(long_import.records, source_name=long_import.source_name,
                             source_sha256=long_import.source_sha256,
                             report=long_import.report.to_dict())
        before = store.snapshot()
        excinfo = xlsx_error(tmp_path, key, [GOOD, replaced(GOOD, 3, "n/a")])
        assert only_problem(excinfo).row == 3
        assert store.snapshot() == before


@pytest.mark.parametrize("change, expected", [
    (('layout = "long"', 'format = "long"'), "key 'layout' = None: is required"),
    (('quantity = "crp"', 'quantity = "CRP"'), "[columns.CRP] key 'quantity'"),
    (("[columns.PLT]", '[columns.PLT]\nunit = "mmol/L"'), "[columns.PLT] key 'unit'"),
    (('anchor = "date"', 'anchor = "infusion_day"\nvisit_days = { D7 = 7 }'),
     "[time] key 'visit_days'"),
    (('utc_offset_min = 60', 'utc_offset_min = 900'), "allowed: -840 to 840"),
    (('[events.infusion]', '[events.car_t]'), "unknown event kind"),
    (('sheet = "labs"', 'sheet = "labs"\ncolour = "red"'), "key 'colour'"),
])  # fmt: skip
def test_mapping_errors_name_file_key_and_value(tmp_path, change, expected):
    text = LONG_XLSX_MAPPING.replace(*change)
    with pytest.raises(TabularMappingError) as excinfo:
        load_mapping(write_mapping(tmp_path / "bad.toml", text))
    assert "mapping bad.toml" in str(excinfo.value)
    assert expected in str(excinfo.value)


def test_mapping_that_is_not_toml(tmp_path):
    with pytest.raises(TabularMappingError, match="bad.toml: is not TOML"):
        load_mapping(write_mapping(tmp_path / "bad.toml", "layout = long\n"))


def test_day_anchor_needs_an_infusion_event(tmp_path):
    text = LONG_XLSX_MAPPING.replace('anchor = "date"', 'anchor = "infusion_day"')
    text = text.split("[events.infusion]")[0]
    with pytest.raises(TabularMappingError, match=r"needs an \[events.infusion\]"):
        load_mapping(write_mapping(tmp_path / "bad.toml", text))


# -- cells ----------------------------------------------------------------------------
@pytest.mark.parametrize("cell, decimal, expected", [
    ("<0.5", ".", (0.5, "below")), ("<= 2", ".", (2.0, "below")),
    ("≥1e3", ".", (1000.0, "above")), ("0,25", ",", (0.25, None)),
    (7, ".", (7.0, None)), (" -1.5 ", ".", (-1.5, None)),
])  # fmt: skip
def test_parse_number(cell, decimal, expected):
    assert parse_number(cell, decimal) == expected


@pytest.mark.parametrize("cell, decimal", [
    ("1,000.5", "."), ("1.000,5", ","), ("nan", "."), ("inf", "."), ("<", "."),
    (True, "."), (dt.date(2024, 1, 1), "."), ("0,5", "."),
])  # fmt: skip
def test_parse_number_refuses(cell, decimal):
    with pytest.raises(CellError):
        parse_number(cell, decimal)


def test_parse_instant_zone_rules():
    assert parse_instant("2024-03-07T08:00:00Z", None) == (utc(2024, 3, 7, 8), 0)
    assert parse_instant(dt.date(2024, 3, 7), -300) == (utc(2024, 3, 7, 17), -300)
    with pytest.raises(CellError, match="zone"):
        parse_instant(dt.datetime(2024, 3, 7, 8), None)


def test_column_letters():
    assert [column_letter(i) for i in (0, 3, 25, 26, 27, 51, 52, 701, 702)] == [
        "A", "D", "Z", "AA", "AB", "AZ", "BA", "ZZ", "AAA"]


# -- export and round trips -----------------------------------------------------------
def round_trip_records(key: bytes) -> list[PatientRecord]:
    infusion = utc(2024, 3, 6, 10, 15, 0, 123456)

    def obs(quantity, when, value, unit, censored=None):
        return Observation(quantity, when, value, unit, censored,
                           source_utc_offset_min=60)

    first = PatientRecord(
        facts=PatientFacts(pseudonymise("RT-1", key),
                           product="axicabtagene ciloleucel"),
        observations=(
            obs("crp", utc(2024, 3, 1, 7), 5.0, "mg/L", "below"),
            obs("crp", utc(2024, 3, 7, 6, 30), 12.5, "mg/L"),
            obs("crp", utc(2024, 3, 7, 18, 0, 0, 999999), 30.25, "mg/L"),
            obs("platelets", utc(2024, 3, 7, 6, 30), 0.1 + 0.2, "10*9/L"),
            obs("temperature", utc(2024, 3, 6, 23, 30), 38.70000000000001, "Cel"),
            obs("ferritin", utc(2024, 3, 8, 6), 5000.0, "ng/mL", "above"),
        ),
        events=(Event("infusion", infusion, name="axicabtagene ciloleucel",
                      source_utc_offset_min=60),),
        site_utc_offset_min=60,
    )
    second = PatientRecord(
        facts=PatientFacts(pseudonymise("RT-2", key), product="tisagenlecleucel"),
        observations=(obs("anc", utc(2024, 4, 2, 3), 0.5, "10*9/L", "below"),),
        events=(Event("infusion", utc(2024, 4, 1, 20), name="tisagenlecleucel"),),
        site_utc_offset_min=-300,
    )
    return [first, second]


def essentials(record: PatientRecord, rel: float = 0.0):
    observations = [(o.quantity, o.time, pytest.approx(o.value, rel=rel, abs=0),
                     o.unit, o.censored, record.study_day(o.time))
                    for o in record.observations]
    return (record.facts.pseudonym, record.facts.product, record.infusion_time,
            record.site_utc_offset_min, observations)


@pytest.mark.parametrize("suffix", ["csv", "xlsx", "parquet"])
@pytest.mark.parametrize("layout", ["long", "wide"])
def test_round_trip_preserves_values_units_censoring_and_times(
    tmp_path, key, layout, suffix
):
    records = round_trip_records(key)
    table = export_tabular(records, tmp_path / f"out.{suffix}", layout=layout,
                           mapping_path=tmp_path / "out.toml")
    back = read_tabular(table, tmp_path / "out.toml", key=key)
    # CSV and Parquet keep every bit; openpyxl writes XLSX numbers with 16
    # significant digits ("%.16g"), so 0.1 + 0.2 comes back as 0.3 (1 ulp).
    rel = 1e-15 if suffix == "xlsx" else 0.0
    expected = [essentials(r, rel) for r in records]
    assert [essentials(r) for r in back.records] == expected
    assert back.report.file_format == suffix
    assert back.report.n_observations == 7


def test_long_export_columns(tmp_path, key):
    path = export_tabular(round_trip_records(key), tmp_path / "out.csv")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == ("patient,time,study_day,quantity,value,unit,censored,"
                        "site_utc_offset_min,infusion_time,product")
    pseudonym = pseudonymise("RT-1", key)
    assert lines[1] == (f"{pseudonym},2024-03-01T07:00:00+00:00,-5,crp,5.0,mg/L,"
                        "below,60,2024-03-06T10:15:00.123456+00:00,"
                        "axicabtagene ciloleucel")


def test_wide_export_groups_by_study_day(tmp_path, key):
    path = export_tabular(round_trip_records(key), tmp_path / "out.xlsx", layout="wide")
    book = openpyxl.load_workbook(path)
    ws = book["cartwin"]
    visits = [c.value for c in ws[1]]
    names = [c.value for c in ws[2]]
    book.close()
    # second patient's ANC falls on study day 0 (site zone UTC-5).
    assert visits[4:10] == ["day -5", None, "day 0", None, "day 1", None]
    assert names[4:10] == ["crp", "crp time", "anc", "anc time", "crp", "crp time"]
    assert "day 1 #2" in visits  # the second CRP of study day 1
    assert "<5.0" in [c for row in ws.iter_rows(values_only=True) for c in row]


def test_long_export_of_a_patient_without_infusion(tmp_path, key):
    record = PatientRecord(
        PatientFacts(pseudonymise("x", key)),
        (Observation("crp", utc(2024, 1, 1, 8), 1.25, "mg/L"),))
    table = export_tabular(record, tmp_path / "out.parquet",
                           mapping_path=tmp_path / "m.toml")
    (back,) = read_tabular(table, tmp_path / "m.toml", key=key).records
    assert back.infusion is None and back.facts == record.facts
    assert [(o.time, o.value) for o in back.observations] == [(utc(2024, 1, 1, 8), 1.25)]


def test_wide_export_needs_an_infusion(tmp_path, key):
    record = PatientRecord(
        PatientFacts(pseudonymise("x", key)),
        (Observation("crp", utc(2024, 1, 1), 1.0, "mg/L"),))
    with pytest.raises(DataError, match="no infusion event"):
        export_tabular([record], tmp_path / "out.csv", layout="wide")
    assert not (tmp_path / "out.csv").exists()


def test_export_from_store_reads_back(tmp_path, key, long_import):
    with open_store(tmp_path / "twin.duckdb") as store:
        store.import_records(long_import.records, source_name="labs.csv",
                             source_sha256=long_import.source_sha256)
        table = export_tabular(store, tmp_path / "out.parquet",
                               mapping_path=tmp_path / "out.toml")
        expected = [store.load_record(p.pseudonym) for p in store.persons()]
    back = read_tabular(table, tmp_path / "out.toml", key=key)
    def key_of(record):
        return record.facts.pseudonym

    got = [essentials(r) for r in sorted(back.records, key=key_of)]
    assert got == [essentials(r) for r in sorted(expected, key=key_of)]


# -- pseudonymisation -----------------------------------------------------------------
def test_no_raw_id_in_records_report_or_name(tmp_path, key):
    table = write_csv(tmp_path / "MRN-0001_labs.csv", LONG_CSV)
    result = read_tabular(table, EXAMPLES / "tabular_long.toml", key=key)
    dumped = repr(result.records) + json.dumps(result.report.to_dict())
    assert "MRN" not in dumped and "MRN" not in result.source_name
    assert result.source_name == f"{pseudonymise('MRN-0001', key)}_labs.csv"


def test_pseudonym_ids_are_checked_and_not_echoed(tmp_path, key):
    records = round_trip_records(key)
    table = export_tabular(records, tmp_path / "out.csv",
                           mapping_path=tmp_path / "m.toml")
    text = table.read_text(encoding="utf-8")
    text = text.replace(records[0].facts.pseudonym, "MRN-42")
    table.write_text(text, encoding="utf-8")
    with pytest.raises(TabularImportError) as excinfo:
        read_tabular(table, tmp_path / "m.toml", key=key)
    assert {p.code for p in excinfo.value.problems} == {"not-pseudonym"}
    assert "MRN-42" not in str(excinfo.value)
