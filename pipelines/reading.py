"""Finding raw files and splitting them into records, each with its raw text verbatim.

A file becomes a frame of records (`record_locator`, `raw_record`, `json_text`): `raw_record` is exactly what the
file held, for quarantine; `json_text` is the record as one JSON object (CSV rows are rebuilt as nested objects
from their dotted columns), or null when the record does not parse. Field extraction then runs over whole
columns (sources/*.py), never record by record.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson
import polars as pl

from pipelines.duck import scratch
from pipelines.schemas import SOURCES

RECORD_COLUMNS = {
    "source": pl.String,
    "source_file": pl.String,
    "record_locator": pl.String,
    "record_index": pl.Int64,
    "raw_record": pl.String,
    "json_text": pl.String,
    "parse_error": pl.String,
}

SUFFIXES = (".json", ".ndjson", ".jsonl", ".csv")
# CSV columns holding the item list as JSON text, by source.
ITEM_COLUMNS = {"brevo": "products", "bonifiq": "Products", "esputnik": "items"}


class RawDirError(ValueError):
    """The raw directory itself is unusable (missing, not a directory)."""


@dataclass(frozen=True)
class RawFile:
    path: Path  # absolute, resolved
    rel_path: str  # path inside the raw directory, '/'-separated: what tables and logs show
    source: str
    sha256: str
    size_bytes: int
    # The file's modification and status-change times when it was hashed: `discover_files` reuses a hash whose
    # file still has the same path, size and times (a rewrite changes the change time, which no tool sets back).
    mtime_ns: int = 0
    ctime_ns: int = 0

    @property
    def kind(self) -> str:
        name = self.path.name.lower()
        name = name[:-3] if name.endswith(".gz") else name
        return Path(name).suffix.lstrip(".")

    @property
    def gzipped(self) -> bool:
        return self.path.name.lower().endswith(".gz")


def _is_raw_name(name: str) -> bool:
    lowered = name.lower()
    lowered = lowered[:-3] if lowered.endswith(".gz") else lowered
    return lowered.endswith(SUFFIXES) and not name.startswith(".")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_raw_dir(raw_dir: Path) -> None:
    """Raise RawDirError when `raw_dir` is missing or not a directory."""
    if not raw_dir.exists():
        raise RawDirError(f"raw directory {raw_dir} does not exist")
    if not raw_dir.is_dir():
        raise RawDirError(f"raw directory {raw_dir} is not a directory")


def discover_files(
    raw_dir: Path, hashed: Mapping[tuple[str, int, int, int], str] | None = None
) -> tuple[list[RawFile], list[str]]:
    """Raw files under `<raw_dir>/<source>/**`, in processing order, and warnings about what was skipped.

    Order: by source, then lexicographic path inside the source (SPEC §2). Paths are resolved and must stay
    inside the raw directory: a symlink (to a file or a directory) that points elsewhere is skipped with a
    warning; directory symlinks are never followed. A path that cannot be resolved (a symlink loop) or a file
    that cannot be opened is skipped with a warning, not an error that stops the run.

    `hashed` maps (path, size, mtime_ns, ctime_ns) of files hashed before to their sha256: a file found with
    the same four is not read to hash it again (as git and rsync decide a file is unchanged). At 10M orders a
    daily run otherwise read all 13.9 GiB of earlier files, about 40 s, only to hash them.
    """
    hashed = hashed or {}
    raw_dir = Path(raw_dir)
    check_raw_dir(raw_dir)
    root = raw_dir.resolve()
    files: list[RawFile] = []
    warnings: list[str] = []
    for source in SOURCES:
        source_dir = root / source
        if not source_dir.is_dir():
            continue
        found: list[tuple[str, Path]] = []
        for dirpath, dirnames, filenames in os.walk(source_dir, followlinks=False):
            dirnames.sort()
            # Directory symlinks are not walked, so a file that is no symlink itself resolves to its directory's
            # resolved path: one resolve per directory, not per file (Path.resolve checks every component of
            # the path in Python; 10M orders, 43,631 files: discovery 2.9 s -> 1.8 s)
            try:
                real_dir = Path(dirpath).resolve()
            except (OSError, RuntimeError):
                real_dir = None
            for name in dirnames:  # listed but not walked when they are symlinks: say so when they lead outside
                path = Path(dirpath) / name
                if path.is_symlink() and not _inside(path, root):
                    warnings.append(f"{path.relative_to(root)}: skipped, it points outside the raw directory")
            for name in sorted(filenames):
                if not _is_raw_name(name):
                    continue
                path = Path(dirpath) / name
                try:
                    resolved = path.resolve() if real_dir is None or path.is_symlink() else real_dir / name
                except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
                    warnings.append(f"{path.relative_to(root)}: skipped, its path cannot be resolved: {exc}")
                    continue
                if not resolved.is_relative_to(root):
                    warnings.append(f"{path.relative_to(root)}: skipped, it points outside the raw directory")
                    continue
                if not resolved.is_file():
                    continue
                found.append((path.relative_to(root).as_posix(), resolved))
        for rel_path, resolved in sorted(found):
            try:
                stat = resolved.stat()  # before reading: a change while it is hashed shows in the next run's stat
                key = (rel_path, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
                sha256 = hashed.get(key) or sha256_of(resolved)
            except OSError as exc:  # e.g. no permission to read it
                warnings.append(f"{rel_path}: skipped, it cannot be opened: {exc.strerror or exc}")
                continue
            files.append(
                RawFile(
                    path=resolved,
                    rel_path=rel_path,
                    source=source,
                    sha256=sha256,
                    size_bytes=stat.st_size,
                    mtime_ns=stat.st_mtime_ns,
                    ctime_ns=stat.st_ctime_ns,
                )
            )
    return files, warnings


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):
        return False


class UnreadableFile(Exception):
    """The file as a whole cannot be read (not gzip, not UTF-8): reported, not fatal."""


def read_text(file: RawFile) -> str:
    try:
        data = file.path.read_bytes()
        if file.gzipped:
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise UnreadableFile(f"cannot read {file.rel_path}: {exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"{file.rel_path} is not UTF-8 text: {exc}") from exc
    return text.removeprefix("\ufeff")


def _frame(
    file: RawFile, locators: list[str], raws: list[str], jsons: list[str | None], errors: list[str | None]
) -> pl.DataFrame:
    n = len(raws)
    return pl.DataFrame(
        {
            "source": [file.source] * n,
            "source_file": [file.rel_path] * n,
            "record_locator": locators,
            "record_index": list(range(n)),
            "raw_record": raws,
            "json_text": jsons,
            "parse_error": errors,
        },
        schema=RECORD_COLUMNS,
    )


def check_objects(frame: pl.DataFrame, order_by: str = "record_index") -> pl.DataFrame:
    """Mark records whose text is not one JSON object as unparseable (DuckDB validates whole columns).

    Run it once over the records of many files (ordered by `order_by`): its cost is per call, not per record.
    Only the texts go to DuckDB and only their JSON type comes back (in input order): the record columns are
    never copied, which at millions of records is gigabytes.
    """
    if not frame[order_by].is_sorted():
        frame = frame.sort(order_by)
    texts = frame.select("json_text")  # noqa: F841 (read by DuckDB below)
    with scratch() as con:
        kinds = con.sql(
            """
            select case when json_text is null then null
                        when not json_valid(json_text) then 'INVALID'
                        else json_type(json_text) end as kind
            from texts
            """
        ).pl()["kind"]
    kind = pl.col("__kind")
    checked = (
        frame.with_columns(kinds.alias("__kind"))
        .with_columns(
            pl.when(kind == "OBJECT").then(pl.col("json_text")).alias("json_text"),
            pl.when(pl.col("parse_error").is_not_null())
            .then(pl.col("parse_error"))
            .when(pl.col("json_text").is_null())
            .then(pl.lit("empty record"))
            .when(kind == "INVALID")
            .then(pl.lit("not valid JSON"))
            .when(kind != "OBJECT")
            .then(pl.format("a {} where an order object is due", kind.str.to_lowercase()))
            .alias("parse_error"),
        )
        .drop("__kind")
    )
    return _strict(checked)


# Deeper than this is not an order (and Python's parser would hit its recursion limit at a depth that depends
# on the caller's stack): such a record does not parse, the same way in every run.
MAX_DEPTH = 256
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]|"', re.DOTALL)  # a whole string, a bracket, a comma


class _NotStrict(ValueError):
    pass


def _no_constant(name: str) -> None:
    raise _NotStrict(f"{name} is not a JSON value")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _NotStrict(f"duplicate key {json.dumps(duplicate, ensure_ascii=False)}")
    return record


def _depth(text: str) -> int:
    depth = deepest = 0
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in ("]", "}"):
            depth -= 1
    return deepest


def strict_json_error(text: str) -> str | None:
    """Why `text` is not strict JSON (RFC 8259), or None. DuckDB's reader also takes trailing commas, NaN and
    Infinity, and keeps the first of duplicate keys where other readers keep the last: such a record is
    ambiguous, so it is quarantined as malformed rather than read one way."""
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(text) > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels"
    try:
        json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except _NotStrict as exc:
        return f"not valid JSON: {exc}"
    except json.JSONDecodeError as exc:
        return f"not valid JSON: {exc.msg} (character {exc.pos})"
    except RecursionError:
        return f"nested deeper than {MAX_DEPTH} levels"
    return None


def _surely_strict(text: str) -> bool:
    """True when `text` is certainly strict JSON with no repeated key (the fast path of `_strict`).

    orjson parses RFC 8259 strictly, but keeps the last of repeated keys without a word. Re-encoded, a text
    keeps every ':' (orjson never escapes one) except those of the members it dropped, so the same count of
    ':' means no member was dropped; unless the text spells a ':' as an escape (`\\u003a`), which re-encoding
    turns into a ':' (such texts, and any orjson refuses, take the exact path).
    """
    if text.count("[") + text.count("{") > MAX_DEPTH or "\\u003" in text:
        return False
    return _reencoded_colons(text) == text.count(":")


def _reencoded_colons(text: str) -> int:
    """How many ':' `text` has once parsed and re-encoded by orjson; -1 when orjson refuses it."""
    try:
        return orjson.dumps(orjson.loads(text)).count(b":")
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return -1


def _strict(checked: pl.DataFrame) -> pl.DataFrame:
    """Records DuckDB took as JSON objects, checked again by a strict parser (DuckDB has no strict mode).

    Fast path: `_surely_strict` (orjson), its counting done over the whole column, only the parse per record.
    Only the records it does not vouch for go through `strict_json_error`, which finds the reason, or accepts
    what orjson alone refuses (a lone surrogate escape, a number too large for it).
    """
    text = pl.col("json_text")
    texts = checked.select(
        text,
        (
            text.is_not_null()
            & (text.str.count_matches("[", literal=True) + text.str.count_matches("{", literal=True) <= MAX_DEPTH)
            & ~text.str.contains("\\u003", literal=True)
        ).alias("quick"),
        text.str.count_matches(":", literal=True).alias("colons"),
    ).with_row_index("i")
    quick = texts.filter("quick")
    reencoded = pl.Series([_reencoded_colons(t) for t in quick["json_text"].to_list()], dtype=pl.Int64)
    suspects = pl.concat(
        [texts.filter(text.is_not_null() & ~pl.col("quick")), quick.filter(reencoded != quick["colons"].cast(pl.Int64))]
    )
    errors = {
        i: error
        for i, t in zip(suspects["i"].to_list(), suspects["json_text"].to_list(), strict=True)
        if (error := strict_json_error(t)) is not None
    }
    if not errors:
        return checked
    strict_error = pl.Series("strict_error", [None] * checked.height, dtype=pl.String).scatter(
        list(errors), list(errors.values())
    )
    return (
        checked.with_columns(strict_error)
        .with_columns(
            pl.when(pl.col("strict_error").is_null()).then(pl.col("json_text")).alias("json_text"),
            pl.coalesce("parse_error", "strict_error").alias("parse_error"),
        )
        .drop("strict_error")
    )


# What Python's str.strip() strips (str.isspace): a line of only these is blank. Rust's is_whitespace, which
# Polars' strip_chars() uses by default, leaves out \x1c-\x1f.
PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _split_lines(file: RawFile, text: str) -> pl.DataFrame:
    # Records end at '\n' (or '\r\n') only: str.splitlines would also split at U+2028, U+0085, ..., which
    # JSON allows raw inside strings. Split in Polars: no Python string per line.
    lines = (
        pl.Series("raw_record", [text], dtype=pl.String)
        .str.split("\n")
        .explode()
        .str.strip_suffix("\r")
        .to_frame()
        .with_row_index("line", offset=1)
        .filter(pl.col("raw_record").str.strip_chars(PY_WHITESPACE) != "")
    )
    return lines.select(
        pl.lit(file.source).alias("source"),
        pl.lit(file.rel_path).alias("source_file"),
        pl.format("line {}", pl.col("line")).alias("record_locator"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("record_index"),
        "raw_record",
        pl.col("raw_record").alias("json_text"),
        pl.lit(None, pl.String).alias("parse_error"),
    )


_DECODER = json.JSONDecoder()
_WS = " \t\r\n"


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def _element_end(text: str, pos: int) -> int | None:
    """Where the array element at `pos` ends when it does not parse: before the first ',' or ']' outside every
    string and bracket; None when the text ends first (an unterminated string or bracket: truncated)."""
    depth = 0
    for match in _TOKEN.finditer(text, pos):
        token = match.group()
        if token == '"':
            return None
        if token in ("[", "{"):
            depth += 1
        elif token in (",", "]") and depth == 0:
            return len(text[pos : match.start()].rstrip(_WS)) + pos
        elif token in ("]", "}"):
            depth = max(depth - 1, 0)
    return None


def _array_elements(text: str, start: int) -> tuple[list[tuple[int, int]], int | None, int | None]:
    """Spans of the elements of the JSON array whose '[' is at `start`, verbatim.

    An element that does not parse (or has text after it) spans up to the next ',' or ']' outside strings and
    brackets: one bad record, and the elements after it are still read. Returns the spans; when the array
    breaks off (truncated), the offset where the unparseable rest begins, so that rest can be quarantined whole
    instead of lost; else the offset just after its closing ']'.
    """
    spans: list[tuple[int, int]] = []
    pos = _skip_ws(text, start + 1)
    if pos < len(text) and text[pos] == "]":
        return spans, None, pos + 1
    while True:
        try:
            _, end = _DECODER.raw_decode(text, pos)
        except (json.JSONDecodeError, RecursionError):
            end = None
        if end is None or (_skip_ws(text, end) < len(text) and text[_skip_ws(text, end)] not in ",]"):
            end = _element_end(text, pos)
            if end is None:
                return spans, pos, None
            if end == pos:  # a stray ',' (`[a,,b]`, `[a,]`): no record text, nothing to keep
                pos = _skip_ws(text, end)
                if text[pos] == ",":
                    pos = _skip_ws(text, pos + 1)
                    continue
                return spans, None, pos + 1
        spans.append((pos, end))
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            return spans, None, pos + 1
        return spans, pos, None


def _envelope_array(text: str, start: int) -> tuple[int | None, int | None]:
    """Offset of the '[' of the `orders` member when the object at `start` is an {"orders": [...]} envelope,
    and the offset just after the envelope when it parses whole (None when it is truncated or malformed)."""
    try:
        value, end = _DECODER.raw_decode(text, start)
    except (json.JSONDecodeError, RecursionError):
        value, end = None, None
    if value is not None and not (isinstance(value, dict) and isinstance(value.get("orders"), list)):
        return None, None
    return _orders_member(text, start), end


def _orders_member(text: str, start: int) -> int | None:
    # Walk the top-level members to find where the `orders` array starts in the text.
    pos = _skip_ws(text, start + 1)
    while pos < len(text) and text[pos] == '"':
        try:
            key, pos = _DECODER.raw_decode(text, pos)
        except (json.JSONDecodeError, RecursionError):
            return None
        pos = _skip_ws(text, pos)
        if pos >= len(text) or text[pos] != ":":
            return None
        pos = _skip_ws(text, pos + 1)
        if key == "orders" and pos < len(text) and text[pos] == "[":
            return pos
        try:
            _, pos = _DECODER.raw_decode(text, pos)
        except (json.JSONDecodeError, RecursionError):
            return None
        pos = _skip_ws(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
    return None


def _split_json(file: RawFile, text: str) -> pl.DataFrame:
    start = _skip_ws(text, 0)
    if start >= len(text):
        return _frame(file, [], [], [], [])
    array_at = doc_end = None
    if text[start] == "[":
        array_at = start
    elif text[start] == "{":
        array_at, doc_end = _envelope_array(text, start)
    if array_at is None:
        # a single order object (or something unparseable: one record, quarantined whole)
        return _frame(file, ["object"], [text], [text.strip()], [None])
    spans, broken_at, array_end = _array_elements(text, array_at)
    if array_at == start:
        doc_end = array_end
    locators = [f"index {i}" for i in range(len(spans))]
    raws = [text[a:b] for a, b in spans]
    jsons: list[str | None] = list(raws)
    errors: list[str | None] = [None] * len(spans)
    if broken_at is not None:
        rest = text[broken_at:]
        if rest.strip() and rest.strip() not in ("]", "]}"):
            locators.append(f"index {len(spans)} onwards")
            raws.append(rest)
            jsons.append(None)
            errors.append("the JSON array breaks off here; the rest of the file does not parse")
    elif doc_end is not None and _skip_ws(text, doc_end) < len(text):
        # more text after the array / envelope (e.g. two exports appended): quarantined whole, never dropped
        locators.append("after the JSON document")
        raws.append(text[_skip_ws(text, doc_end) :])
        jsons.append(None)
        errors.append("text after the end of the JSON document")
    return _frame(file, locators, raws, jsons, errors)


@dataclass
class CsvPending:
    """A CSV file split into records whose JSON texts are still to be rebuilt from `cells` (rows `good`):
    `finish_csv` rebuilds those of many files with one query per header."""

    frame: pl.DataFrame
    good: list[int]
    cells: pl.DataFrame
    header: list[str]
    source: str


def _split_csv(file: RawFile, text: str) -> pl.DataFrame | CsvPending:
    # The reader and the raw texts share one split into physical lines ('\n', '\r\n' or '\r', as the csv
    # module sees them): str.splitlines would also split at U+2028, U+0085, ... inside fields.
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.reader(lines)
    try:
        header = next(reader)
        while not any(cell.strip() for cell in header):  # blank lines before the header are not the header
            header = next(reader)
    except StopIteration:
        return _frame(file, [], [], [], [])
    except csv.Error as exc:
        raise UnreadableFile(f"{file.rel_path}: CSV header does not parse: {exc}") from exc
    conflict = _header_conflict(header)
    item_column = ITEM_COLUMNS[file.source]
    item_at = next((j for j, name in enumerate(header) if name.strip() == item_column), None)
    locators: list[str] = []
    raws: list[str] = []
    rows: list[list[str] | None] = []
    errors: list[str | None] = []
    line_start = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            row = None
            error = f"CSV row does not parse: {exc}"
        else:
            error = None
        line_end = reader.line_num
        raw = "".join(lines[line_start:line_end]).rstrip("\r\n")
        first_line = line_start + 1
        line_start = line_end
        if row is not None and not any(cell.strip() for cell in row):
            continue
        if row is not None and len(row) != len(header):
            error = f"CSV row has {len(row)} fields where the header has {len(header)}"
            row = None
        if row is not None and conflict:
            error, row = conflict, None
        if row is not None and item_at is not None and row[item_at].strip():
            # DuckDB would read the cell leniently (a trailing comma dropped without a word): strict, as a line is
            cell = row[item_at]
            item_error = None if _surely_strict(cell) else strict_json_error(cell)
            if item_error:
                error, row = f"the item list column {item_column} is {item_error}", None
        locators.append(f"line {first_line}")
        raws.append(raw)
        rows.append(row)
        errors.append(error)
    if not raws:
        return _frame(file, [], [], [], [])
    good = [i for i, r in enumerate(rows) if r is not None]
    columns = {f"c{j}": [rows[i][j] for i in good] for j in range(len(header))}  # type: ignore[index]
    cells = pl.DataFrame(columns, schema={f"c{j}": pl.String for j in range(len(header))})
    frame = _frame(file, locators, raws, [None] * len(raws), errors)
    return CsvPending(frame=frame, good=good, cells=cells, header=header, source=file.source)


def finish_csv(pending: list[CsvPending]) -> list[pl.DataFrame]:
    """The record frames of `pending` CSV files, JSON texts rebuilt: one DuckDB query per distinct header."""
    groups: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for n, p in enumerate(pending):
        groups.setdefault((p.source, tuple(p.header)), []).append(n)
    rebuilt: dict[int, pl.Series] = {}
    for (source, header), members in groups.items():
        cells = pl.concat([pending[n].cells for n in members], how="vertical")
        texts = _rows_to_json(cells, list(header), ITEM_COLUMNS[source]) if cells.height else None
        offset = 0
        for n in members:
            size = pending[n].cells.height
            rebuilt[n] = texts.slice(offset, size) if texts is not None else pl.Series([], dtype=pl.String)
            offset += size
    frames = []
    for n, p in enumerate(pending):
        jsons = pl.Series("json_text", [None] * p.frame.height, dtype=pl.String)
        if p.good:
            jsons = jsons.scatter(p.good, rebuilt[n])
        bad_items = f"the item list column {ITEM_COLUMNS[p.source]} is not valid JSON"
        frames.append(
            p.frame.with_columns(jsons).with_columns(
                pl.when(pl.col("json_text").is_null() & pl.col("parse_error").is_null())
                .then(pl.lit(bad_items))
                .otherwise(pl.col("parse_error"))
                .alias("parse_error")
            )
        )
    return frames


def _header_conflict(header: list[str]) -> str | None:
    """A header naming one field twice (`email,email`, or `billing` beside `billing.city`) makes every row
    ambiguous: which cell is the field? Unnamed columns are ignored, as unknown ones are."""
    names = [name.strip() for name in header if name.strip()]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return f"the CSV header has column {name} twice"
        seen.add(name)
    prefixes = {".".join(name.split(".")[:i]) for name in names for i in range(1, name.count(".") + 1)}
    nested = sorted(seen & prefixes)
    if nested:
        return f"the CSV header has column {nested[0]} and columns nested under it"
    return None


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _rows_to_json(cells: pl.DataFrame, header: list[str], item_column: str) -> pl.Series:
    """Rebuild nested JSON objects from CSV cells: dotted names nest, the item column is parsed JSON.

    Empty cells are absent fields (JSON null; a nested object with no cell filled is null as a whole), which
    extraction reads as absent. Values stay strings: extraction casts them and flags bad types.
    """
    tree: dict = {}
    for j, name in enumerate(header):
        node = tree
        parts = name.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = j

    def leaves(node: dict) -> list[str]:
        return [f"nullif(c{v}, '')" for v in node.values() if not isinstance(v, dict)] + [
            leaf for v in node.values() if isinstance(v, dict) for leaf in leaves(v)
        ]

    def render(node: dict) -> str:
        members = []
        for key, value in node.items():
            if isinstance(value, dict):
                # a nested object whose cells are all empty is absent, not `{}` (an empty `financial` or
                # `billing` would otherwise make a status update look like a full order)
                members.append(
                    f"{_sql_string(key)}, case when coalesce({', '.join(leaves(value))}) is null then null "
                    f"else {render(value)} end"
                )
            elif key == item_column:
                col = f"nullif(c{value}, '')"
                members.append(
                    f"{_sql_string(key)}, case when {col} is null then null "
                    f"when json_valid({col}) then json({col}) else null end"
                )
            else:
                members.append(f"{_sql_string(key)}, nullif(c{value}, '')")
        return "json_object(" + ", ".join(members) + ")"

    item_checks = [
        f"(nullif(c{j}, '') is not null and not json_valid(c{j}))"
        for j, name in enumerate(header)
        if name.strip() == item_column
    ]
    bad_items = " or ".join(item_checks) or "false"
    with scratch() as con:
        rendered = con.sql(
            f"select case when {bad_items} then null else ({render(tree)})::varchar end as j from cells"
        ).pl()
    return rendered["j"].cast(pl.String)


def split_records(file: RawFile) -> pl.DataFrame | CsvPending:
    """Split one raw file into records (a CSV file's JSON texts still to rebuild with `finish_csv`); raises
    UnreadableFile when the file as a whole cannot be read."""
    text = read_text(file)
    if file.kind in ("ndjson", "jsonl"):
        return _split_lines(file, text)
    if file.kind == "json":
        return _split_json(file, text)
    return _split_csv(file, text)


def raw_signature(raw_dir: Path) -> str:
    """A cheap fingerprint of what the raw directory holds (paths, sizes, modification times), no reading.

    Used by the new-file sensor: it changes when a file lands, grows or is replaced.
    """
    root = Path(raw_dir)
    digest = hashlib.sha256()
    count = 0
    for source in SOURCES:
        source_dir = root / source
        if not source_dir.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(source_dir, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                if not _is_raw_name(name):
                    continue
                try:
                    stat = (Path(dirpath) / name).stat()
                except OSError:
                    continue
                count += 1
                digest.update(f"{dirpath}/{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return f"{count}:{digest.hexdigest()[:16]}"
