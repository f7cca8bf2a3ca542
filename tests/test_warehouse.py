"""Warehouse helpers: staged tables keep every row they are given."""

import duckdb
import polars as pl
import pytest

from pipelines import warehouse

ROWS = 300_000  # more than one DuckDB row group (122,880 rows)


def big_frame() -> pl.DataFrame:
    return pl.DataFrame({"a": pl.int_range(0, ROWS, eager=True), "b": pl.int_range(0, ROWS, eager=True).cast(str)})


def test_a_table_created_empty_in_a_transaction_keeps_a_large_insert(tmp_path):
    frame = big_frame()
    with warehouse.connect(tmp_path / "w.duckdb") as con, warehouse.transaction(con):
        warehouse.create_table(con, "staged", frame.head(0))
        warehouse.insert_checked(con, "staged", frame)
        warehouse.insert_checked(con, "staged", frame.head(10))
        assert con.sql("select count(*), count(distinct a) from staged").fetchone() == (ROWS + 10, ROWS)
        warehouse.create_table(con, "copy", frame)
        assert con.sql("select count(*) from copy").fetchone() == (ROWS,)
    with warehouse.connect(tmp_path / "w.duckdb", read_only=True) as con:
        assert con.sql("select count(*) from staged").fetchone() == (ROWS + 10,)
        assert con.sql("describe staged").pl()["column_type"].to_list() == ["BIGINT", "VARCHAR"]


def test_insert_checked_catches_the_rows_duckdb_loses(tmp_path):
    """DuckDB 1.5: `create table as select * from <empty frame>` inside a transaction, then a large insert: the
    rows are lost, and insert_checked says so. When DuckDB keeps them, the workaround may go (skipped then)."""
    frame = big_frame()
    empty = frame.head(0)  # noqa: F841 (read by DuckDB)
    with warehouse.connect(tmp_path / "w.duckdb") as con, warehouse.transaction(con):
        con.execute("create table t as select * from empty")
        try:
            warehouse.insert_checked(con, "t", frame)
        except RuntimeError as error:
            assert str(error) == f"t: {ROWS} rows inserted, 0 arrived"
        else:
            pytest.skip(f"DuckDB {duckdb.__version__} keeps the rows: create_table may go back to plain SQL")
