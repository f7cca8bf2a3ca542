"""The machinery the three source modules share: column-wise field extraction and rule-driven validation.

A source declares its fields (JSON path and kind), its item fields, and its quarantine rules, each rule being a
reason code of SPEC §4 with a Polars expression that is true for a good record. Extraction runs in DuckDB over
the whole column of JSON texts; the rules become one pandera schema per source, validated with `lazy=True`
so every failure of every record is reported; each failing record keeps the first reason in SPEC order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pandera.polars as pa
import polars as pl

from pipelines.duck import in_chunks, scratch
from pipelines.schemas import MONEY, REASON_CODES

Kind = Literal["str", "money", "int", "float", "bool", "ts", "list_str", "json"]


@dataclass(frozen=True)
class Field:
    name: str
    path: str  # JSON path inside the record (or the item), e.g. '$.financial.subtotal'
    kind: Kind = "str"


@dataclass(frozen=True)
class Rule:
    """A record is good for `code` when `ok` is true; `reason` explains a failure in words."""

    code: str
    ok: pl.Expr
    reason: pl.Expr


@dataclass
class SourceSpec:
    name: str
    fields: Sequence[Field]
    items_path: str
    item_fields: Sequence[Field]
    record_rules: Callable[..., list[Rule]]
    item_rules: Callable[..., list[Rule]] = lambda rules: []  # noqa: E731
    extra: dict = field(default_factory=dict)


def _sql_path(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def _typed_sql(text: str, kind: Kind) -> str:
    if kind == "money":
        return f"coalesce(try_cast({text} as decimal(18,2)), try_cast(try_cast({text} as double) as decimal(18,2)))"
    if kind == "int":
        return (
            f"case when try_cast({text} as double) = floor(try_cast({text} as double)) "
            f"then try_cast(try_cast({text} as double) as bigint) end"
        )
    if kind == "float":
        return f"case when isfinite(try_cast({text} as double)) then try_cast({text} as double) end"
    if kind == "bool":
        return f"try_cast({text} as boolean)"
    if kind == "ts":
        return f"timezone('UTC', try_cast({text} as timestamptz))"
    raise ValueError(kind)


def _value_sql(value: str, spec: Field) -> str:
    """The first of two select layers: the field's text, trimmed, null when empty (its JSON for `json` and
    `list_str`), as column `v__<name>`. `value` is the field's value as `json_transform` gave it (see `_plan`):
    text (a number or a boolean as written, an object or a list as compact JSON) for scalar kinds, JSON else."""
    if spec.kind in ("json", "list_str"):
        return f"{value} as v__{spec.name}"
    return f"nullif(trim({value}), '') as v__{spec.name}"


def _field_sql(spec: Field, doc: str) -> list[str]:
    """The second layer: `<name>` typed, plus `<name>__text` (the text as given) where typed. `doc` is the
    JSON document, re-read only in the rare case a text starts like an object or a list."""
    text = f"v__{spec.name}"
    if spec.kind == "str":  # plus whether an object or list stands where text is due (invalid_type)
        nested = (
            f"coalesce(case when left({text}, 1) in ('{{', '[') "
            f"then json_type(json_extract({doc}, {_sql_path(spec.path)})) in ('OBJECT', 'ARRAY') end, false)"
        )
        return [f"{text} as {spec.name}", f"{nested} as {spec.name}__nested"]
    if spec.kind == "json":  # a JSON null is an absent field (json_transform gives SQL null), not the text 'null'
        return [f"{text}::varchar as {spec.name}"]
    if spec.kind == "list_str":
        return [
            f"case json_type({text}) "
            f"when 'ARRAY' then list_filter(json_extract_string({text}, '$[*]'), "
            f"lambda x: nullif(trim(x), '') is not null) "
            f"when 'VARCHAR' then [json_extract_string({text}, '$')] end as {spec.name}"
        ]
    return [f"{text} as {spec.name}__text", f"{_typed_sql(text, spec.kind)} as {spec.name}"]


def _parts(path: str) -> list[str]:
    if not path.startswith("$.") or any(c in path for c in "[]*\"'"):
        raise ValueError(f"unsupported field path {path!r}: only $.a.b.c")
    return path[2:].split(".")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class _Plan:
    """How to read a list of fields out of one document with as few parses as possible.

    `structure` is the `json_transform` structure of the document; a node that is both a field of kind `json`
    and the parent of other fields is read as JSON, and its children from it in a second, small transform
    (`subdocs`: column alias, SQL of its JSON, structure).
    """

    structure: dict
    values: dict[str, str]  # field name -> SQL of its transformed value
    subdocs: list[tuple[str, str, dict]]


def _plan(fields: Sequence[Field], top: str, extra: dict[str, str] | None = None) -> _Plan:
    json_kinds = ("json", "list_str")
    as_json = {tuple(_parts(f.path)) for f in fields if f.kind in json_kinds}
    parents = {tuple(_parts(f.path)[:i]) for f in fields for i in range(1, len(_parts(f.path)))}
    split = as_json & parents  # read as JSON, children from a second transform
    structure: dict = dict(extra or {})
    values: dict[str, str] = {}
    subdocs: dict[tuple[str, ...], tuple[str, dict]] = {}
    for f in fields:
        parts = tuple(_parts(f.path))
        leaf_type = "JSON" if f.kind in json_kinds else "VARCHAR"
        cut = next((i for i in range(1, len(parts)) if parts[:i] in split), None)
        if cut is None:
            node = structure
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = leaf_type
            values[f.name] = ".".join([top, *(_ident(p) for p in parts)])
        else:
            alias = "sub_" + "_".join(parts[:cut])
            sub = subdocs.setdefault(parts[:cut], (alias, {}))[1]
            node = sub
            for part in parts[cut:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = leaf_type
            values[f.name] = ".".join([alias, *(_ident(p) for p in parts[cut:])])
    for parts in split:
        node = structure
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = "JSON"
    docs = [(alias, ".".join([top, *(_ident(p) for p in parts)]), sub) for parts, (alias, sub) in subdocs.items()]
    return _Plan(structure=structure, values=values, subdocs=docs)


def _json_literal(structure: dict) -> str:
    return "'" + json.dumps(structure).replace("'", "''") + "'"


# DuckDB scans a frame's Arrow record batches in parallel, one batch to a thread at a time: a frame of one chunk
# is parsed by one thread. In pieces of this many rows the JSON is parsed on every core (a 64 MiB batch of each
# source, 318,000 records: 5.9 → 3.7 s on two cores, median of five; 4,096 rows: 3.7 s, 65,536: 4.7 s).
SCAN_PIECE_ROWS = 16_384


def extract(records: pl.DataFrame, spec: SourceSpec) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Field columns for every parsed record, and one row per item of every record that lists items.

    `records` has `rid` (a unique row key) and `json_text`; records whose text did not parse are left out.
    Each document is parsed once, by one `json_transform` into a struct of every field (and the item list as
    JSON); each item likewise.
    """
    items_key = _parts(spec.items_path)
    if len(items_key) != 1:
        raise ValueError(f"items path {spec.items_path!r} must be a top-level key")
    plan = _plan(spec.fields, "s", {items_key[0]: "JSON"})
    subs = "".join(
        f", json_transform({source}, {_json_literal(structure)}) as {alias}"
        for alias, source, structure in plan.subdocs
    )
    values = ", ".join(_value_sql(plan.values[f.name], f) for f in spec.fields)
    columns = ",\n  ".join(item for f in spec.fields for item in _field_sql(f, "json_text"))
    item_plan = _plan(spec.item_fields, "s")
    item_values = ", ".join(_value_sql(item_plan.values[f.name], f) for f in spec.item_fields)
    item_columns = ",\n  ".join(item for f in spec.item_fields for item in _field_sql(f, "item"))
    with scratch() as con:
        present = records.filter(pl.col("json_text").is_not_null()).select("rid", "json_text")
        parsed = in_chunks(present, SCAN_PIECE_ROWS)  # noqa: F841 (read by DuckDB below)
        fields = con.sql(
            f"""
            with transformed as (
                select rid, json_text, json_transform(json_text, {_json_literal(plan.structure)}) as s
                from parsed
            ),
            split as (select *{subs} from transformed),
            texts as (
                select rid, json_text, s.{_ident(items_key[0])}::varchar as items__json, {values} from split
            )
            select rid, items__json,
              json_type(items__json) as items__type,  -- a null list (SQL null here) is no list
              {columns}
            from texts
            """
        ).pl()
        lists = fields.filter(pl.col("items__type") == "ARRAY").select("rid", "items__json")
        item_lists = in_chunks(lists, SCAN_PIECE_ROWS)  # noqa: F841 (read by DuckDB below)
        items = con.sql(
            f"""
            with lists as (
                select rid, json_transform(items__json, '["JSON"]') as list from item_lists
            ),
            exploded as (
                select rid, unnest(list) as item, generate_subscripts(list, 1) as line_number from lists
            ),
            transformed as (
                select rid, line_number, item, json_transform(item, {_json_literal(item_plan.structure)}) as s
                from exploded
            ),
            texts as (select rid, line_number, item, {item_values} from transformed)
            select rid, line_number::integer as line_number,
              coalesce(json_type(item), 'NULL') as item__type,
              {item_columns}
            from texts
            """
        ).pl()
    # DuckDB keeps the input order (preserve_insertion_order); sorting is only a guard, and a cheap check.
    if not fields["rid"].is_sorted():
        fields = fields.sort("rid")
    if not items["rid"].is_sorted():
        items = items.sort("rid", "line_number")
    return fields.drop("items__json"), items


def text_present(name: str) -> pl.Expr:
    return pl.col(name).is_not_null()


def bad_type(names: Sequence[str]) -> pl.Expr:
    """True where any of the typed fields `names` was given but did not cast to its type."""
    if not names:
        return pl.lit(False)
    return pl.any_horizontal([pl.col(f"{n}__text").is_not_null() & pl.col(n).is_null() for n in names])


def first_bad_name(
    names: Sequence[str], bad: Callable[[str], pl.Expr], labels: dict[str, str] | None = None
) -> pl.Expr:
    """The name of the first field for which `bad(name)` holds (for reason texts), as `labels` spell it."""
    labels = labels or {}
    expr = pl.lit(None, dtype=pl.String)
    for name in reversed(names):
        expr = pl.when(bad(name)).then(pl.lit(labels.get(name, name))).otherwise(expr)
    return expr


def labels_of(fields: Sequence[Field]) -> dict[str, str]:
    """Field name -> the name the source uses (its JSON path without `$.`), for reason texts."""
    return {f.name: f.path.removeprefix("$.") for f in fields}


def nested_text(fields: Sequence[Field]) -> tuple[pl.Expr, pl.Expr]:
    """Text fields given as a JSON object or list (e.g. `"email": ["a@x"]`): (any such field, reason)."""
    names = [f.name for f in fields if f.kind == "str"]

    def bad(n: str) -> pl.Expr:
        return pl.col(f"{n}__nested")

    return (
        pl.any_horizontal([bad(n) for n in names]) if names else pl.lit(False),
        pl.format("{} is an object or a list where text is due", first_bad_name(names, bad, labels_of(fields))),
    )


def type_rule(names: Sequence[str], labels: dict[str, str] | None = None) -> Rule:
    labels = labels or {}

    def bad(n: str) -> pl.Expr:
        return pl.col(f"{n}__text").is_not_null() & pl.col(n).is_null()

    return Rule(
        "invalid_type",
        ~bad_type(names),
        pl.format(
            "{} has the wrong type",
            first_bad_name(names, bad).replace_strict(labels, default=first_bad_name(names, bad)),
        ),
    )


def required_rule(required: dict[str, pl.Expr]) -> Rule:
    """`required` maps a field label to an expression true when the field is present."""
    labels = list(required)
    missing = pl.lit(None, dtype=pl.String)
    for label in reversed(labels):
        missing = pl.when(~required[label]).then(pl.lit(label)).otherwise(missing)
    return Rule(
        "missing_required_field",
        pl.all_horizontal(list(required.values())) if required else pl.lit(True),
        pl.format("required field {} is missing or empty", missing),
    )


def items_rule(code: str, column: str) -> Rule:
    """A record-level rule that fails when an item failed `code` (items are checked in their own frame)."""
    return Rule(code, ~pl.col(f"item__{code}").fill_null(False), pl.col(f"item__{code}__reason"))


def _schema(name: str, rules: list[Rule]) -> pa.DataFrameSchema:
    """Each rule a check of the record key `rid`, computed over the whole row: pandera reports a failure case
    as the checked column's value, so a failing record costs one integer, where a check of the frame made
    pandera turn each failing record's every field into Python objects (half the time of validating a batch
    with 1 % bad records)."""
    return pa.DataFrameSchema(
        name=f"{name}_raw",
        columns={
            "rid": pa.Column(
                checks=[
                    pa.Check(lambda data, ok=rule.ok: data.lazyframe.select(ok.fill_null(False)), name=rule.code)
                    for rule in rules
                ]
            )
        },
        strict=False,
    )


def failures(frame: pl.DataFrame, name: str, rules: list[Rule]) -> pl.DataFrame:
    """Run a source's rules as one pandera schema (`lazy=True`): (row index, first reason code, reason).

    Every failed check is reported by pandera; a record failing several keeps the first code in SPEC §4 order.
    """
    if frame.height == 0 or not rules:
        return pl.DataFrame(schema={"index": pl.Int64, "reason_code": pl.String, "reason": pl.String})
    try:
        _schema(name, rules).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    else:
        return pl.DataFrame(schema={"index": pl.Int64, "reason_code": pl.String, "reason": pl.String})
    order = {code: i for i, code in enumerate(REASON_CODES)}
    unknown = set(cases["check"].unique()) - set(order)
    if unknown:  # a failure that is not one of our rules (a pandera-level error): surface it loudly
        raise RuntimeError(f"{name}: unexpected validation failures {sorted(unknown)}: {cases}")
    first = (
        cases.select(pl.col("index").cast(pl.Int64), pl.col("check").alias("reason_code"))
        .with_columns(pl.col("reason_code").replace_strict(order, return_dtype=pl.Int32).alias("rank"))
        .sort("index", "rank")
        .unique("index", keep="first", maintain_order=True)
        .drop("rank")
    )
    # Words for each failure: evaluate the failing code's reason expression on those rows only.
    indexed = frame.with_row_index("index").with_columns(pl.col("index").cast(pl.Int64))
    bad = indexed.join(first, on="index", how="inner")
    reasons = pl.lit(None, dtype=pl.String)
    for rule in rules:
        reasons = pl.when(pl.col("reason_code") == rule.code).then(rule.reason.cast(pl.String)).otherwise(reasons)
    explained = bad.select("index", "reason_code", reasons.alias("reason"))
    return explained.with_columns(
        pl.coalesce(pl.col("reason"), pl.col("reason_code").str.replace_all("_", " ")).alias("reason")
    )


def item_flags(items: pl.DataFrame, name: str, rules: list[Rule]) -> pl.DataFrame:
    """Per record (`rid`): for each item rule, whether any item fails it and why (the first failing line)."""
    fails = failures(items, f"{name}_items", rules)
    if fails.height == 0:
        return pl.DataFrame(schema={"rid": pl.Int64})
    per_item = (
        items.with_row_index("index")
        .with_columns(pl.col("index").cast(pl.Int64))
        .join(fails, on="index")
        .with_columns(pl.format("item {}: {}", pl.col("line_number"), pl.col("reason")).alias("reason"))
    )
    # Every code any item of the record fails (not only the first failing item's): the record then takes the
    # earliest in SPEC order across all its items, e.g. item 2's negative price before item 1's quantity 0.
    per_code = (
        per_item.sort("rid", "line_number")
        .group_by("rid", "reason_code", maintain_order=True)
        .agg(pl.col("reason").first())
    )
    codes = sorted(per_code["reason_code"].unique().to_list())
    return per_code.group_by("rid", maintain_order=True).agg(
        *[(pl.col("reason_code") == code).any().alias(f"item__{code}") for code in codes],
        *[
            pl.col("reason").filter(pl.col("reason_code") == code).first().alias(f"item__{code}__reason")
            for code in codes
        ],
    )


def with_item_flags(fields: pl.DataFrame, flags: pl.DataFrame, codes: Sequence[str]) -> pl.DataFrame:
    joined = fields.join(flags, on="rid", how="left")
    missing = []
    for code in codes:
        if f"item__{code}" not in joined.columns:
            missing += [pl.lit(False).alias(f"item__{code}"), pl.lit(None, pl.String).alias(f"item__{code}__reason")]
    return joined.with_columns(missing) if missing else joined


def money_nonnegative(names: Sequence[str], labels: dict[str, str] | None = None) -> Rule:
    def bad(n: str) -> pl.Expr:
        return pl.col(n) < 0

    return Rule(
        "negative_amount",
        ~pl.any_horizontal([bad(n).fill_null(False) for n in names]),
        pl.format("{} is below zero", first_bad_name(names, lambda n: bad(n).fill_null(False), labels)),
    )


# Larger quantities are not a count of goods (and would overflow the integer and money columns downstream).
MAX_QUANTITY = 2**31 - 1


def quantity_ok(quantity: str = "quantity") -> pl.Expr:
    q = pl.col(quantity)
    return (q > 0) & (q == q.floor()) & (q <= MAX_QUANTITY)


def quantity_rule() -> Rule:
    """An item without a quantity is not a line of goods either: core.order_items needs a positive count."""
    return Rule(
        "invalid_quantity",
        quantity_ok().fill_null(False),
        pl.when(pl.col("quantity__text").is_null())
        .then(pl.lit("quantity is missing: not a positive integer"))
        .otherwise(pl.format("quantity {} is not a positive integer", pl.col("quantity__text"))),
    )


def timestamp_rule(
    names: Sequence[str], *, offset_required: Sequence[str] = (), labels: dict[str, str] | None = None
) -> Rule:
    """Dates must parse; those in `offset_required` must also say their UTC offset (or Z)."""

    def bad(n: str) -> pl.Expr:
        unparsed = pl.col(f"{n}__text").is_not_null() & pl.col(n).is_null()
        if n in offset_required:
            # the offset must follow a time of day: a bare date such as 2024-01-25 has none
            no_offset = pl.col(f"{n}__text").is_not_null() & ~pl.col(f"{n}__text").str.contains(
                r"\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$"
            )
            return unparsed | no_offset
        return unparsed

    return Rule(
        "invalid_timestamp",
        ~pl.any_horizontal([bad(n) for n in names]),
        pl.format(
            "{} is not a valid timestamp{}",
            first_bad_name(names, bad, labels),
            pl.lit(" with a UTC offset" if offset_required else ""),
        ),
    )


def status_rule(known: Sequence[str], column: str = "status") -> Rule:
    lowered = [k.lower() for k in known]
    return Rule(
        "unknown_status",
        pl.col(column).is_null() | pl.col(column).str.to_lowercase().is_in(lowered),
        pl.format("status {} is not one the source defines", pl.col(column)),
    )


def currency_rule(known: Sequence[str], column: str = "currency") -> Rule:
    return Rule(
        "unknown_currency",
        pl.col(column).is_null() | pl.col(column).str.to_uppercase().is_in(list(known)),
        pl.format("currency {} has no FX rate in the rules", pl.col(column)),
    )


def normalize_email(expr: pl.Expr) -> pl.Expr:
    """Trimmed, lower-case (SPEC §3). Not checked for shape here: exports decide what is deliverable."""
    cleaned = expr.str.strip_chars().str.to_lowercase()
    return pl.when(cleaned.str.len_chars() > 0).then(cleaned)


def normalize_phone(expr: pl.Expr) -> pl.Expr:
    """Digits with the country code: '+1 (234) 567-890' → '1234567890'; a leading international 00 is dropped."""
    digits = expr.str.replace_all(r"\D", "").str.replace(r"^00", "")
    return pl.when(digits.str.len_chars() >= 6).then(digits)


def items_struct(items: pl.DataFrame, mapping: dict[str, pl.Expr]) -> pl.DataFrame:
    """Items as one list-of-struct column per record (`rid`, `items`), in line order."""
    from pipelines.schemas import ITEM_STRUCT

    if items.height == 0:
        return pl.DataFrame(schema={"rid": pl.Int64, "items": pl.List(ITEM_STRUCT)})
    exprs = []
    for name, dtype in ITEM_STRUCT.to_schema().items():
        expr = mapping.get(name, pl.lit(None))
        exprs.append(expr.cast(dtype).alias(name))
    return (
        items.sort("rid", "line_number")
        .select("rid", pl.struct(exprs).alias("item"))
        .group_by("rid", maintain_order=True)
        .agg(pl.col("item").alias("items"))
    )


def line_amount(quantity: str = "quantity", price: str = "unit_price") -> pl.Expr:
    """price × quantity as money; null (never an error that stops the run) when it overflows DECIMAL(18,2)."""
    return (pl.col(price).cast(MONEY, strict=False) * pl.col(quantity).cast(pl.Int64, strict=False)).cast(
        MONEY, strict=False
    )


def line_overflows(quantity: str = "quantity", price: str = "price") -> pl.Expr:
    """A valid quantity times a price that does not fit DECIMAL(18,2): not a money amount (invalid_type)."""
    return pl.col(price).is_not_null() & quantity_ok(quantity).fill_null(False) & line_amount(quantity, price).is_null()
