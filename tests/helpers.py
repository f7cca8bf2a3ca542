"""Shared test helpers: build a raw directory from fixtures and run the pure pipeline over it."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

from pipelines.canonical import Canonical, build_canonical
from pipelines.ingest import ParseResult, parse_files
from pipelines.reading import discover_files
from pipelines.rules import Rules, load_rules

FIXTURES = Path(__file__).parent / "fixtures"
SEEDS = FIXTURES / "seeds"
SALT = "test-salt"


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
