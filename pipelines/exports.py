"""Contact files for e-mail/SMS tools from an RFM segment (SPEC §7 `loyalty export`).

Formats:
- `brevo`: `;`-separated UTF-8 with Brevo's upper-case attribute headers: EMAIL, SMS, FIRSTNAME, LASTNAME, then
  RFM_SEGMENT, RFM_CELL, LOYALTY_TIER, POINTS_BALANCE, CLV_12M. Phones as `+` and digits.
- `klaviyo`: `Email` and `Phone Number` first, then First Name, Last Name and the properties; booleans are
  `true`/`false`, dates are text (YYYY-MM-DD).
- `esputnik`: comma-separated, a fixed column set: email, phone, firstName, lastName, rfm_segment, rfm_cell,
  loyalty_tier, points_balance, clv.
- `csv`: every field we hold for the contact, comma-separated.

A contact with neither a usable e-mail nor a phone is skipped and counted. Cells that a spreadsheet would run as
a formula (starting with = + - @, a tab or a carriage return) get a leading apostrophe; phone columns hold only
`+` and digits, so they are left as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipelines import warehouse
from pipelines.atomic import staged_dir

FORMATS = ("brevo", "esputnik", "klaviyo", "csv")
_FORMULA_START = r"^[=+\-@\t\r]"  # what a spreadsheet may run as a formula
_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class UnknownSegment(ValueError):
    def __init__(self, unknown: list[str], known: list[str]):
        super().__init__(f"unknown segment {', '.join(unknown)}; segments are: {', '.join(known)}")
        self.unknown, self.known = unknown, known


@dataclass
class ExportResult:
    path: Path
    written: int
    skipped_without_contact: int


def contacts_query() -> str:
    """Segment members with contact data; the segment list is a bound parameter, never SQL text."""
    return """
        select r.customer_id, c.email, c.phone, c.first_name, c.last_name,
               r.segment, r.rfm_cell, r.r_score, r.f_score, r.m_score, r.recency_days, r.frequency, r.monetary,
               p.tier as loyalty_tier, p.balance as points_balance, v.clv as clv_12m,
               cast(c.first_seen_at as date) as first_seen_on
        from marts.customer_rfm as r
        inner join core.customers as c on c.customer_id = r.customer_id
        left join core.customer_points as p on p.customer_id = r.customer_id
        left join core.clv_customers as v on v.customer_id = r.customer_id
        where list_contains(?, r.segment)
        order by r.segment, r.customer_id
    """


def known_segments(con) -> list[str]:
    """Every segment name of the segment map (dbt seed), whether or not anyone is in it now."""
    if "rfm_segments" in warehouse.table_names(con, "staging"):
        return [r[0] for r in con.execute("select distinct segment from staging.rfm_segments order by 1").fetchall()]
    return [r[0] for r in con.execute("select distinct segment from marts.customer_rfm order by 1").fetchall()]


def shape(contacts: pl.DataFrame, fmt: str) -> pl.DataFrame:
    """The contact frame in the columns and cell formats of `fmt` (contacts already filtered to reachable ones)."""
    phone = pl.when(pl.col("phone").is_not_null()).then(pl.lit("+") + pl.col("phone"))
    clv = pl.col("clv_12m").cast(pl.Float64).round(2)
    if fmt == "brevo":
        return contacts.select(
            pl.col("email").alias("EMAIL"),
            phone.alias("SMS"),
            pl.col("first_name").alias("FIRSTNAME"),
            pl.col("last_name").alias("LASTNAME"),
            pl.col("segment").alias("RFM_SEGMENT"),
            pl.col("rfm_cell").alias("RFM_CELL"),
            pl.col("loyalty_tier").alias("LOYALTY_TIER"),
            pl.col("points_balance").alias("POINTS_BALANCE"),
            clv.alias("CLV_12M"),
        )
    if fmt == "klaviyo":
        return contacts.select(
            pl.col("email").alias("Email"),
            phone.alias("Phone Number"),
            pl.col("first_name").alias("First Name"),
            pl.col("last_name").alias("Last Name"),
            pl.col("segment").alias("rfm_segment"),
            pl.col("rfm_cell"),
            pl.col("loyalty_tier"),
            pl.col("points_balance"),
            clv.alias("clv_12m"),
            (pl.col("points_balance").fill_null(0) < 0).alias("negative_balance"),
            pl.col("first_seen_on").cast(pl.String).alias("first_seen_on"),
        )
    if fmt == "esputnik":
        return contacts.select(
            pl.col("email"),
            phone.alias("phone"),
            pl.col("first_name").alias("firstName"),
            pl.col("last_name").alias("lastName"),
            pl.col("segment").alias("rfm_segment"),
            pl.col("rfm_cell"),
            pl.col("loyalty_tier"),
            pl.col("points_balance"),
            clv.alias("clv"),
        )
    return contacts.with_columns(phone.alias("phone"), clv.alias("clv_12m"), pl.col("first_seen_on").cast(pl.String))


def neutralise(frame: pl.DataFrame, keep: tuple[str, ...]) -> pl.DataFrame:
    """Prefix an apostrophe to text cells a spreadsheet would read as a formula; `keep` columns are left alone."""
    text = [c for c, t in frame.schema.items() if t == pl.String and c not in keep]
    return frame.with_columns(
        pl.when(pl.col(c).str.contains(_FORMULA_START)).then(pl.lit("'") + pl.col(c)).otherwise(pl.col(c)).alias(c)
        for c in text
    )


def _contacts(con, segments: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(every member of `segments`, those reachable: a usable e-mail or phone; the others are set to null)."""
    contacts = con.execute(contacts_query(), [segments]).pl()
    contacts = contacts.with_columns(
        pl.when(pl.col("email").str.contains(_EMAIL)).then(pl.col("email")).alias("email"),
        pl.when(pl.col("phone").str.contains(r"^\d{6,15}$")).then(pl.col("phone")).alias("phone"),
    )
    return contacts, contacts.filter(pl.col("email").is_not_null() | pl.col("phone").is_not_null())


def _write_contacts(reachable: pl.DataFrame, fmt: str, out: Path) -> int:
    shaped = neutralise(shape(reachable, fmt), keep=("SMS", "Phone Number", "phone"))
    out.parent.mkdir(parents=True, exist_ok=True)
    _write(shaped, out, ";" if fmt == "brevo" else ",")
    return shaped.height


def export_segments(con, segments: list[str], fmt: str, out: Path) -> ExportResult:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (formats: {', '.join(FORMATS)})")
    known = known_segments(con)
    unknown = [s for s in segments if s not in known]
    if unknown:
        raise UnknownSegment(unknown, known)
    contacts, reachable = _contacts(con, segments)
    written = _write_contacts(reachable, fmt, out)
    return ExportResult(path=out, written=written, skipped_without_contact=contacts.height - reachable.height)


def segment_slug(segment: str) -> str:
    """A segment's file name: lower-case a-z and 0-9 kept, each other run one `_` (Can't Lose Them: can_t_lose_them)."""
    return re.sub(r"[^a-z0-9]+", "_", segment.lower()).strip("_")


@dataclass
class SegmentFiles:
    folder: Path
    files: list[Path]
    contacts: dict[str, int]  # segment -> contacts written (the same in every format)
    skipped_without_contact: dict[str, int]


def export_all_segments(con, out_dir: Path) -> SegmentFiles:
    """Every segment in every format as `<out_dir>/<format>/<segment_slug>.csv`, the folder replaced as a whole.

    The files are written into a hidden folder beside `out_dir` and renamed into place at the end (replacing the
    previous run's folder), so a marketer never picks up a day's files half-written or mixed with an older run's.
    """
    segments = known_segments(con)
    slugs = {segment: segment_slug(segment) for segment in segments}
    if len(set(slugs.values())) != len(slugs):
        raise ValueError(f"segment names that differ only in punctuation or case would share a file: {segments}")
    members, reachable = _contacts(con, segments)  # one query for every file (each keeps the query's order)
    of_segment = {segment: reachable.filter(pl.col("segment") == segment) for segment in segments}
    skipped = {s: members.filter(pl.col("segment") == s).height - of_segment[s].height for s in segments}
    files, contacts = [], {}
    with staged_dir(out_dir) as staged:
        for fmt in FORMATS:
            for segment in segments:
                contacts[segment] = _write_contacts(of_segment[segment], fmt, staged / fmt / f"{slugs[segment]}.csv")
                files.append(out_dir / fmt / f"{slugs[segment]}.csv")
    return SegmentFiles(folder=out_dir, files=files, contacts=contacts, skipped_without_contact=skipped)


def _write(frame: pl.DataFrame, out: Path, separator: str) -> None:
    booleans = [c for c, t in frame.schema.items() if t == pl.Boolean]
    frame = frame.with_columns(pl.col(c).cast(pl.String).str.to_lowercase() for c in booleans)
    tmp = out.with_name(out.name + ".tmp")
    frame.write_csv(tmp, separator=separator, quote_style="necessary", null_value="")
    tmp.replace(out)  # a half-written file is never what the marketer finds
