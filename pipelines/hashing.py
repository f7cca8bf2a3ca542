"""Stable hashes for ids: the same text gives the same id on any machine and any library version.

Polars' own hash is seeded and not stable across versions, so ids are SHA-256 digests computed by DuckDB over
whole columns.
"""

from __future__ import annotations

import polars as pl

from pipelines.duck import scratch


def sha256_column(
    frame: pl.DataFrame, text: pl.Expr, alias: str, *, prefix: str = "", length: int = 64
) -> pl.DataFrame:
    """`frame` with a column `alias` = prefix + first `length` hex digits of sha256(text); null text → null."""
    # Only the input column goes to DuckDB: a frame handed to it is converted to Arrow whole (an order event
    # has some 60 columns, item lists among them).
    keyed = frame.select(text.alias("__hash_input"))  # noqa: F841 (read by DuckDB below)
    with scratch() as con:
        hashed = con.sql(
            "select case when __hash_input is null then null else ? || left(sha256(__hash_input), ?) end as h "
            "from keyed",
            params=[prefix, length],
        ).pl()
    return frame.with_columns(hashed["h"].alias(alias))
