"""Fuzzing the reader (issue #7): the seed records, mutated at random, in every file kind.

Each example mutates some seed records (keys deleted, values replaced by random JSON, types changed), writes
them as one file per source (JSON array or envelope, NDJSON, CSV, each maybe gzipped), then mutates the file
text itself (characters flipped or deleted; quotes, brackets, commas, newlines inserted). Whatever comes out:
no exception escapes `parse_files` nor the canonical tables and the ledger built on what it accepted, and every
record read is either an event or a quarantine row that keeps its raw text verbatim.

Derandomized: the same examples on every run, so CI is reproducible (about 30 s).
"""

from __future__ import annotations

import copy
import gzip
import json
import tempfile
from datetime import date
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.canonical import build_canonical
from pipelines.ledger import compute_ledger
from pipelines.reading import ITEM_COLUMNS
from tests.helpers import default_rules, parse, seed_records, to_csv, write

SOURCES = ("brevo", "bonifiq", "esputnik")
KINDS = ("json", "envelope.json", "ndjson", "csv", "json.gz", "ndjson.gz", "csv.gz")
SEEDS = {source: seed_records(source) for source in SOURCES}

SPECIAL_TEXT = [
    "",
    " ",
    "NaN",
    "-1",
    "0",
    "1e400",
    "12345678901234567890",
    "2024-01-01T00:00:00",
    "2024-02-30T00:00:00Z",
    "Delivered",
    "CANCELLED",
    "=cmd|' /C calc'!A0",
    "a\u2028b",
    "\x00",
    "é",
]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**25), max_value=10**25)
    | st.floats()  # NaN and ±Infinity included: json.dumps writes them as the non-JSON NaN / Infinity
    | st.text(max_size=12)
    | st.sampled_from(SPECIAL_TEXT)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)
TOKENS = ['"', "{", "}", "[", "]", ",", ":", "\\", "\n", "\r\n", " ", "NaN", '"x": 1,', "\ufeff", "\u2028", "'"]


def paths(value: object, prefix: tuple = ()) -> list[tuple]:
    """Every path to a member or element inside `value`, outermost first."""
    found: list[tuple] = []
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in children:
        found.append((*prefix, key))
        found += paths(child, (*prefix, key))
    return found


def retyped(value: object) -> object:
    """The same value in another JSON type: numbers as text, text as a number or a list, objects as lists..."""
    if isinstance(value, bool) or value is None:
        return "true" if value else ""
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return len(value) if value else [value]
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return list(value.values())  # type: ignore[union-attr]


@st.composite
def mutated_record(draw, source: str) -> dict:
    record = copy.deepcopy(draw(st.sampled_from(SEEDS[source])))
    for _ in range(draw(st.integers(0, 3))):
        where = paths(record)
        if not where:
            break
        path = draw(st.sampled_from(where))
        parent = record
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["delete", "replace", "retype"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(JSON_VALUES)
        else:
            parent[path[-1]] = retyped(parent[path[-1]])
    return record


def file_text(kind: str, source: str, records: list[dict]) -> str:
    base = kind.removesuffix(".gz")
    if base == "csv":
        return to_csv(records, ITEM_COLUMNS[source])
    texts = [json.dumps(r, ensure_ascii=False) for r in records]
    if base == "ndjson":
        return "".join(t + "\n" for t in texts)
    array = "[\n" + ",\n".join(texts) + "\n]"
    return '{"orders": ' + array + "}" if base == "envelope.json" else array


@st.composite
def text_mutations(draw, text: str) -> str:
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 3]))):  # half the files keep their text as written
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["flip", "delete", "insert"]))
        if action == "flip" and at < len(text):
            text = text[:at] + draw(st.characters(min_codepoint=32, max_codepoint=126)) + text[at + 1 :]
        elif action == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 40)) :]
        else:
            text = text[:at] + draw(st.sampled_from(TOKENS)) + text[at:]
    return text


@st.composite
def raw_files(draw) -> dict[str, tuple[str, bytes, int | None]]:
    """Per file: (kind, bytes, records written when the text was not mutated, else None)."""
    files = {}
    for source in SOURCES:
        kind = draw(st.sampled_from(KINDS))
        records = draw(st.lists(mutated_record(source), min_size=1, max_size=3))
        text = file_text(kind, source, records)
        mutated = draw(text_mutations(text))
        data = mutated.encode("utf-8")
        if draw(st.integers(0, 19)) == 13 and data:  # now and then a byte that is not UTF-8 (13: not a boundary)
            at = draw(st.integers(0, len(data) - 1))
            data = data[:at] + b"\xff" + data[at + 1 :]
        if kind.endswith(".gz"):
            data = gzip.compress(data)
        name = f"{source}/fuzz.{kind.removeprefix('envelope.')}"
        files[name] = (kind, data, len(records) if mutated == text else None)
    return files


def decoded(kind: str, data: bytes) -> str:
    data = gzip.decompress(data) if kind.endswith(".gz") else data
    return data.decode("utf-8").removeprefix("\ufeff")


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(files=raw_files())
def test_mutated_seed_records_never_escape_and_are_all_accounted_for(files) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, (_, data, _) in files.items():
            write(root, name, data)
        result = parse(root)  # no exception; records read = accepted + quarantined, per file

        rules = default_rules()
        canonical = build_canonical(result.events, rules)
        compute_ledger(canonical.orders, canonical.order_items, rules, date(2024, 12, 31))

    for name, (kind, data, written) in files.items():
        row = result.files.filter(pl.col("path") == name).row(0, named=True)
        if row["error"] is not None:  # not UTF-8: reported for the file, nothing read from it
            assert row["records_read"] == 0
            continue
        text = decoded(kind, data)
        events = result.events.filter(pl.col("source_file") == name)
        quarantine = result.quarantine.filter(pl.col("source_file") == name)
        for raw in quarantine["raw_record"]:
            assert raw and raw in text, (name, raw)  # verbatim
        locators = events["record_locator"].to_list() + quarantine["record_locator"].to_list()
        assert len(locators) == len(set(locators)) == row["records_read"], (name, locators)
        if kind.removesuffix(".gz") == "ndjson":  # one record per non-blank line, none lost
            lines = [n for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
            assert sorted(locators, key=lambda s: int(s.split()[1])) == [f"line {n}" for n in lines]
        if written is not None and not kind.startswith("csv"):  # text untouched: every record written is read
            assert row["records_read"] == written, (name, row)
