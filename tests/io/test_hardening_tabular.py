"""Tabular import and export under hostile input (defects found by a tester).

Tables are written inline. Unit arithmetic: 1 mg/dL = 10 mg/L (UCUM). The
OWASP rule for CSV injection: a cell starting with ``=``, ``+``, ``-``, ``@``,
tab or carriage return is prefixed with ``'``
(https://owasp.org/www-community/attacks/CSV_Injection).
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from pathlib import Path

import pytest

from cartwin.errors import DataQualityWarning
from cartwin.io.tabular import TabularImportError, export_tabular, read_tabular
from cartwin.io.tabular_cells import CellError, parse_number
from cartwin.io.tabular_export import formula_safe
from cartwin.record.model import Event, Observation, PatientFacts, PatientRecord
from cartwin.store import open_store

MAPPING = """
layout = "long"
id_column = "Patient ID"
[time]
anchor = "date"
column = "Sample time"
utc_offset_min = 60
[long]
quantity_column = "Test"
value_column = "Result"
unit_column = "Unit"
[columns.CRP]
quantity = "crp"
unit = "mg/dL"
[columns.TEMP]
quantity = "temperature"
unit = "Cel"
[columns.CART]
quantity = "cart_flow"
unit = "/uL"
{cart_extra}
[events.infusion]
start_column = "Infusion date"
name_column = "Product"
dose_column = "Dose"
dose_unit = "10*6{{cells}}"
"""
HEADER = "Patient ID,Sample time,Test,Result,Unit,Infusion date,Product,Dose\n"
ROW_1 = "MRN-1,2024-03-07 08:00,CRP,1.5,mg/dL,2024-03-06,axi-cel,200\n"
ROW_2 = "MRN-1,2024-03-08 08:00,CRP,2.5,mg/dL,2024-03-06,axi-cel,200\n"
ROW_NEW = "MRN-1,2024-03-06 18:00,CRP,0.5,mg/dL,2024-03-06,axi-cel,200\n"


def _write(folder: Path, body: str, *, name: str = "labs.csv",
           cart_extra: str = "") -> tuple[Path, Path]:
    table = folder / name
    table.write_text(HEADER + body, encoding="utf-8")
    mapping = folder / "map.toml"
    mapping.write_text(MAPPING.format(cart_extra=cart_extra), encoding="utf-8")
    return table, mapping


def _problem(table, mapping, key):
    with pytest.raises(TabularImportError) as info:
        read_tabular(table, mapping, key=key)
    assert len(info.value.problems) == 1, info.value
    return info.value.problems[0]


# -- 2: dates without a UTC equivalent ---------------------------------------------
@pytest.mark.parametrize("when", ["0001-01-01 00:30", "9999-12-31 23:30"])
def test_dates_outside_the_accepted_years_are_problems(tmp_path, key, when):
    table, mapping = _write(tmp_path, f"MRN-1,{when},CRP,1.5,mg/dL,2024-03-06,x,200\n")
    problem = _problem(table, mapping, key)
    assert (problem.code, problem.row, problem.column) == ("date-invalid", 2, "B")
    assert "1900 to 2199" in problem.message


# -- 5 and 6: plausibility, doses, CAR T zeros --------------------------------------
@pytest.mark.parametrize(
    ("test", "value", "unit", "column", "fragment"),
    [("TEMP", "1e300", "Cel", "D", "25 to 45 Cel"),
     ("CRP", "-5", "mg/L", "D", "0 to 1000 mg/L"),
     ("CART", "-1", "/uL", "D", "0 to 1e+06 /uL"),
     ("CART", "0", "/uL", "D", "comparator '<'")],
)  # fmt: skip
def test_implausible_values_name_row_column_and_range(
    tmp_path, key, test, value, unit, column, fragment
):
    row = f"MRN-1,2024-03-07 08:00,{test},{value},{unit},2024-03-06,x,200\n"
    problem = _problem(*_write(tmp_path, row), key)
    assert problem.code in ("implausible", "not-detected")
    assert (problem.row, problem.column, problem.value) == (2, column, repr(value))
    assert fragment in problem.message


def test_cart_zero_is_censored_below_the_mapping_lloq(tmp_path, key):
    row = "MRN-1,2024-03-07 08:00,CART,0,/uL,2024-03-06,x,200\n"
    table, mapping = _write(tmp_path, row, cart_extra="lloq = 1")
    (obs,) = read_tabular(table, mapping, key=key).records[0].observations
    assert (obs.value, obs.censored, obs.source_value) == (1.0, "below", 0.0)


@pytest.mark.parametrize("dose", ["1e6", "0.01"])
def test_implausible_infusion_dose(tmp_path, key, dose):
    # dose column is in 10*6 cells: 1e6 x 1e6 = 1e12 > 1e11; 0.01 x 1e6 < 1e5
    row = f"MRN-1,2024-03-07 08:00,CRP,1.5,mg/dL,2024-03-06,x,{dose}\n"
    problem = _problem(*_write(tmp_path, row), key)
    assert (problem.code, problem.column, problem.header) == (
        "implausible", "H", "Dose")


# -- 9: content-based source ids ----------------------------------------------------
def test_source_ids_name_content_not_cells(tmp_path, key):
    table, mapping = _write(tmp_path, ROW_1)
    (obs,) = read_tabular(table, mapping, key=key).records[0].observations
    assert obs.source_id == "tabular:crp:CRP@2024-03-07T07:00:00+00:00"
    assert "MRN-1" not in obs.source_id


def test_cumulative_reexport_adds_only_the_new_row(tmp_path, key):
    first = read_tabular(*_write(tmp_path, ROW_1 + ROW_2, name="v1.csv"), key=key)
    second = read_tabular(
        *_write(tmp_path, ROW_NEW + ROW_1 + ROW_2, name="v2.csv"), key=key
    )
    with open_store(":memory:") as store:
        for result in (first, second):
            summary = store.import_records(
                result.records,
                source_name=result.source_name,
                source_sha256=result.source_sha256,
            )
        assert (summary.n_observations, summary.n_observations_duplicate) == (1, 2)
        (person,) = store.persons()
        record = store.load_record(person.pseudonym)
    assert [o.value for o in record.observations] == pytest.approx([5.0, 15.0, 25.0])


# -- header-only files and the thousands hint ------------------------------------------
def test_header_only_file_imports_nothing_with_a_warning(tmp_path, key):
    table, mapping = _write(tmp_path, "")
    with pytest.warns(DataQualityWarning, match="no data rows"):
        result = read_tabular(table, mapping, key=key)
    assert result.records == () and result.report.n_rows == 0
    assert result.report.to_dict()["warnings"] == [
        "labs.csv: no data rows (header rows only); nothing was imported"
    ]


def test_thousands_separator_hint_does_not_suggest_a_decimal_comma(tmp_path, key):
    row = 'MRN-1,2024-03-07 08:00,CRP,"1,000",mg/L,2024-03-06,x,200\n'
    problem = _problem(*_write(tmp_path, row), key)
    assert problem.code == "non-numeric"
    assert "write 1000" in problem.message
    assert "decimal = ',' would read it as 1.000" in problem.message


# -- 3: file kinds ------------------------------------------------------------------
def test_fifo_is_refused(tmp_path, key):
    _, mapping = _write(tmp_path, ROW_1)
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    problem = _problem(fifo, mapping, key)
    assert problem.code == "not-a-file" and "FIFO" in problem.message


# -- 11: CSV formula injection ---------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "written"),
    [("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"), ("+1+1", "'+1+1"),
     ("-cmd", "'-cmd"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"),
     ("\rx", "'\rx"), ("axi-cel", "axi-cel"), ("-5.0", "-5.0"),
     ("+1e3", "+1e3"), ("<0.5", "<0.5")],
)  # fmt: skip
def test_formula_safe(text, written):
    assert formula_safe(text) == written


def test_csv_export_quotes_formula_text_but_not_numbers(tmp_path):
    t0 = dt.datetime(2024, 3, 6, 9, tzinfo=dt.timezone.utc)
    record = PatientRecord(
        facts=PatientFacts("0123456789abcdef", product="=cmd|' /C calc'!A0"),
        observations=(Observation("crp", t0 + dt.timedelta(days=1), 12.5, "mg/L"),),
        events=(Event("infusion", t0, name="=cmd|' /C calc'!A0"),),
        site_utc_offset_min=-60,
    )
    path = export_tabular([record], tmp_path / "out.csv")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["product"] == "'=cmd|' /C calc'!A0"
    assert (rows[0]["value"], rows[0]["site_utc_offset_min"]) == ("12.5", "-60")


@pytest.mark.parametrize(
    "make", [lambda: 10**400, lambda: "9" * 5000, lambda: "1e999"],
    ids=["400-digit int cell", "5000-digit text", "overflowing text"],
)  # fmt: skip
def test_numbers_beyond_a_double_are_non_numeric_cells(make):
    with pytest.raises(CellError) as info:
        parse_number(make())
    assert info.value.code == "non-numeric"
    assert str(info.value) == "is not a finite number"
