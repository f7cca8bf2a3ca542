"""Paths and options of a run, resolved at run time: explicit value, else environment variable, else default.

The CLI passes its options through the same environment variables (SPEC §7), so `loyalty run`, the Dagster
schedule and `dagster dev` all read one set of settings the same way.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the repository (pipelines/ is one level down)
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"

ENV = {
    "raw_dir": "LOYALTY_RAW_DIR",
    "warehouse": "LOYALTY_WAREHOUSE",
    "rules": "LOYALTY_RULES",
    "as_of": "LOYALTY_AS_OF",
    "exports_dir": "LOYALTY_EXPORTS_DIR",
    "reports_dir": "LOYALTY_REPORTS_DIR",
    "document_salt": "LOYALTY_DOCUMENT_SALT",
}
DEFAULTS = {
    "raw_dir": "data/raw",
    "warehouse": "data/warehouse/loyalty.duckdb",
    "exports_dir": "data/exports",
    "reports_dir": "data/reports",
    # A shop must set its own salt: with the public default, document hashes can be brute-forced.
    "document_salt": "loyalty-pipeline-default-salt",
}


class SettingsError(ValueError):
    """A setting with a value that cannot be used (bad usage: exit 2)."""


def duckdb_memory_limit() -> str:
    """DuckDB's memory limit for the pipeline's own connections (past it DuckDB spills to disk): the environment
    variable LOYALTY_DUCKDB_MEMORY (e.g. '2GB', '512MB'), default 3GB."""
    return _memory_size("LOYALTY_DUCKDB_MEMORY", "3GB")


def dbt_memory_limit() -> str:
    """DuckDB's memory limit in dbt's process (profiles.yml reads the same variable): LOYALTY_DBT_MEMORY, default
    2.5GB. Lower than the pipeline's: dbt itself takes about 0.3 GiB beside it (a 1M-order build with 3GB peaked
    at 2.7 to 3.1 GiB, with 2.5GB at 2.6 to 2.7 GiB)."""
    return _memory_size("LOYALTY_DBT_MEMORY", "2.5GB")


def _memory_size(variable: str, default: str) -> str:
    value = (os.environ.get(variable) or default).strip()
    if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", value, flags=re.IGNORECASE):
        raise SettingsError(f"{variable} {value!r} is not a size such as 2GB or 512MB")
    return value


def dbt_threads() -> int:
    """dbt's threads (read by profiles.yml): the environment variable LOYALTY_DBT_THREADS, default 2."""
    value = (os.environ.get("LOYALTY_DBT_THREADS") or "2").strip()
    if not value.isdigit() or int(value) < 1:
        raise SettingsError(f"LOYALTY_DBT_THREADS {value!r} is not a whole number of at least 1")
    return int(value)


@dataclass(frozen=True)
class Settings:
    raw_dir: Path
    warehouse: Path
    rules: Path | None
    as_of: date
    exports_dir: Path
    document_salt: str
    reports_dir: Path

    @property
    def published_warehouse(self) -> Path:
        """The read-only copy analysts open, swapped in atomically after each successful run."""
        return self.warehouse.parent / "published" / self.warehouse.name

    @property
    def published_parquet_dir(self) -> Path:
        """One Parquet file per mart, published with the warehouse copy."""
        return self.warehouse.parent / "published" / "marts"

    @classmethod
    def resolve(cls, **given: str | None) -> Settings:
        def pick(name: str) -> str | None:
            value = given.get(name)
            if value in (None, ""):
                value = os.environ.get(ENV[name]) or None
            return value if value is not None else DEFAULTS.get(name)

        as_of_text = pick("as_of")
        if as_of_text:
            try:
                as_of = date.fromisoformat(as_of_text)
            except ValueError as exc:
                raise SettingsError(f"as-of date {as_of_text!r} is not YYYY-MM-DD") from exc
        else:
            as_of = datetime.now(UTC).date()
        rules = pick("rules")
        duckdb_memory_limit()  # refused here, before any work, when it is not a size
        dbt_memory_limit()
        dbt_threads()  # likewise: dbt would stop with a less clear message, after ingest and the ledger
        return cls(
            raw_dir=Path(pick("raw_dir")).expanduser().absolute(),
            warehouse=Path(pick("warehouse")).expanduser().absolute(),
            rules=Path(rules).expanduser().absolute() if rules else None,
            as_of=as_of,
            exports_dir=Path(pick("exports_dir")).expanduser().absolute(),
            document_salt=pick("document_salt") or DEFAULTS["document_salt"],
            reports_dir=Path(pick("reports_dir")).expanduser().absolute(),
        )
