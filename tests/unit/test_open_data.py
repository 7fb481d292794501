"""The open-data machinery (services/kernel/open_data.py) without I/O: a file's columns are its
privacy kind's allow-list, CSV cells are safe to open in a spreadsheet, times are to the minute,
and the app's cache of files follows the store."""

from __future__ import annotations

import csv
import importlib
import io
from datetime import datetime, timezone

import pytest

from services.kernel import privacy
from services.kernel.open_data import Field, FileCache, Files, Table, csv_bytes, csv_cell, to_the_minute

SERVICES = ("projects", "volunteers", "feedback")


def test_a_table_s_columns_must_be_its_public_kind_s_fields_in_order():
    fields = tuple(Field(name, "string", "中", "en") for name in privacy.PUBLIC["open_volunteer_month"])
    Table("hours", "open_volunteer_month", "时长", "hours", fields)
    with pytest.raises(ValueError, match="not the privacy policy's public fields"):
        Table("hours", "open_volunteer_month", "时长", "hours", (*fields, Field("person_id", "string", "人", "who")))
    with pytest.raises(ValueError, match="not the privacy policy's public fields"):
        Table("hours", "open_volunteer_month", "时长", "hours", tuple(reversed(fields)))
    with pytest.raises(ValueError, match="unknown type"):
        Field("x", "money", "中", "en")


@pytest.mark.parametrize("service", SERVICES)
def test_every_file_of_every_service_is_an_allow_listed_kind(service):
    dataset = importlib.import_module(f"services.{service}.open_data").DATASET
    for table in dataset.tables:
        assert table.names == privacy.PUBLIC[table.kind]
        assert all(f.zh and f.en for f in table.fields)
    assert dataset.files()[0] == "datapackage.json" and len(dataset.files()) == 1 + 2 * len(dataset.tables)


def test_a_row_is_kept_to_the_allow_list_and_a_missing_column_is_an_error():
    fields = tuple(Field(name, "string", "中", "en") for name in privacy.PUBLIC["open_volunteer_month"])
    table = Table("hours", "open_volunteer_month", "时长", "hours", fields)
    row = {name: "1" for name in table.names}
    assert table.public_rows([{**row, "person_id": "p1", "suppressed": ""}]) == [{**row, "suppressed": None}]
    with pytest.raises(ValueError, match="lacks"):
        table.public_rows([{"month": "2026-01"}])


def test_csv_cells_a_spreadsheet_would_run_are_text():
    assert [csv_cell(v, "string") for v in ("=1+2", "+86", "-3", "@SUM(A1)", "\tx", "路灯")] == [
        "'=1+2", "'+86", "'-3", "'@SUM(A1)", "'\tx", "路灯"]
    assert (csv_cell(-3, "integer"), csv_cell(None, "integer"), csv_cell(True, "boolean")) == ("-3", "", "true")
    fields = tuple(Field(name, "string", "中", "en") for name in privacy.PUBLIC["open_volunteer_month"])
    table = Table("hours", "open_volunteer_month", "时长", "hours", fields)
    content = csv_bytes(table, [{name: "=x" if name == "month" else None for name in table.names}])
    assert content.startswith(b"\xef\xbb\xbf")
    (row,) = csv.DictReader(io.StringIO(content.decode("utf-8-sig")))
    assert row["month"] == "'=x" and row["minutes"] == ""


def test_times_are_to_the_minute_rounded_up():
    at = datetime(2026, 12, 3, 8, 15, 2, 5, tzinfo=timezone.utc)
    assert to_the_minute(at) == datetime(2026, 12, 3, 8, 16, tzinfo=timezone.utc)
    assert to_the_minute(datetime(2026, 12, 3, 8, 16, tzinfo=timezone.utc)) == datetime(2026, 12, 3, 8, 16,
                                                                                          tzinfo=timezone.utc)
    assert to_the_minute(None) is None


def test_the_cache_serves_files_while_the_store_has_not_moved_and_not_for_long():
    now = [0.0]
    cache = FileCache(entries=2, seconds=60, clock=lambda: now[0])
    files = Files({"a.csv": b"x"}, None)
    cache.put(("projects", "c1"), 7, files)
    assert cache.get(("projects", "c1"), 7) is files
    assert cache.get(("projects", "c1"), 8) is None  # the store moved on
    now[0] = 61
    assert cache.get(("projects", "c1"), 7) is None  # too old
    for community in ("c1", "c2", "c3"):
        cache.put(("projects", community), 1, files)
    assert cache.get(("projects", "c1"), 1) is None and cache.get(("projects", "c3"), 1) is files
