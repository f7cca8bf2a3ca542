"""Shared test helpers: build a raw directory from fixtures and run the pure pipeline over it."""

from __future__ import annotations

import csv
import io
import json
import shutil
from datetime import datetime
from functools import cache
from pathlib import Path

from pipelines.canonical import Canonical, build_canonical
from pipelines.ingest import ParseResult, parse_files
from pipelines.reading import discover_files
from pipelines.rules import Rules, load_rules
from pipelines.schemas import REASON_CODES

FIXTURES = Path(__file__).parent / "fixtures"
SEEDS = FIXTURES / "seeds"
SALT = "test-salt"
INGESTED_AT = datetime(2024, 6, 1, 12, 0, 0)


@cache
def default_rules() -> Rules:
    return load_rules()


def raw_dir_with(tmp_path: Path, *fixtures: str, name: str = "raw") -> Path:
    """A raw directory holding copies of the named fixture files (paths relative to tests/fixtures/seeds)."""
    raw = tmp_path / name
    for fixture in fixtures:
        target = raw / fixture
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SEEDS / fixture, target)
    raw.mkdir(parents=True, exist_ok=True)
    return raw


def ingest(raw: Path, rules: Rules | None = None) -> tuple[ParseResult, Canonical]:
    rules = rules or load_rules()
    files, _ = discover_files(raw)
    result = parse_files(files, rules, run_id="test", ingested_at=datetime(2024, 12, 31), document_salt=SALT)
    return result, build_canonical(result.events, rules)


def one(frame, **where):
    """The single row of `frame` matching `where`, as a dict."""
    import polars as pl

    rows = frame.filter(pl.all_horizontal([pl.col(k) == v for k, v in where.items()]))
    assert rows.height == 1, f"expected one row for {where}, found {rows.height}"
    return rows.row(0, named=True)


def write(root: Path, rel: str, content: str | bytes) -> Path:
    """Write `content` exactly (no newline translation) at `root/rel`."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def parse(root: Path, rules: Rules | None = None, **kwargs) -> ParseResult:
    """`discover_files` + `parse_files` over a raw directory, with conservation asserted."""
    files, _ = discover_files(root)
    result = parse_files(
        files, rules or default_rules(), run_id="test", ingested_at=INGESTED_AT, document_salt="salt", **kwargs
    )
    assert_conserved(result)
    return result


def assert_conserved(result: ParseResult) -> None:
    """Records read = accepted + quarantined, per file and in total; every quarantine row is explained and kept.

    Retried records (`retry=`) belong to no file of this batch: each is either re-admitted or quarantined again.
    """
    for row in result.files.iter_rows(named=True):
        assert row["records_read"] == row["records_accepted"] + row["records_quarantined"], row
    assert result.files["records_accepted"].sum() + result.readmitted == result.events.height
    assert result.files["records_quarantined"].sum() + result.retried - result.readmitted == result.quarantine.height
    assert set(result.quarantine["reason_code"]) <= set(REASON_CODES)
    assert result.quarantine["raw_record"].null_count() == 0
    assert result.quarantine["reason"].null_count() == 0


def seed_records(source: str) -> list[dict]:
    """Every record of the seed files of `source` (objects, arrays, `{"orders": [...]}` envelopes), in file order."""
    records: list[dict] = []
    for path in sorted((SEEDS / source).iterdir()):
        document = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(document, dict) and isinstance(document.get("orders"), list):
            records += document["orders"]
        elif isinstance(document, list):
            records += document
        else:
            records.append(document)
    return records


def flatten(record: dict, item_column: str, prefix: str = "") -> dict[str, str]:
    """A CSV row: nested objects as dotted columns, the item list (and any list) as JSON text, scalars as text."""
    row: dict[str, str] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if (key == item_column and not prefix) or isinstance(value, list):
            row[name] = json.dumps(value)
        elif isinstance(value, dict):
            row.update(flatten(value, item_column, prefix=f"{name}."))
        elif value is None:
            row[name] = ""
        elif isinstance(value, bool):
            row[name] = "true" if value else "false"
        else:
            row[name] = str(value)
    return row


def to_csv(records: list[dict], item_column: str) -> str:
    rows = [flatten(r, item_column) for r in records]
    header: list[str] = []
    for row in rows:
        header += [k for k in row if k not in header]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def query(warehouse: Path, sql: str, params: list | None = None) -> list[tuple]:
    """Rows of one query against a warehouse file, opened read-only."""
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()
