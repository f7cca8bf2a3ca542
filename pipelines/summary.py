"""The summary `loyalty run` prints: what this run read, what it kept, what the warehouse now holds."""

from __future__ import annotations

import sys

from pipelines import warehouse
from pipelines.orchestration import RunOutcome
from pipelines.rules import Rules
from pipelines.settings import Settings


def _rows(con, sql: str, params: list | None = None) -> list[tuple]:
    return con.execute(sql, params or []).fetchall()


def print_summary(settings: Settings, rules: Rules, outcome: RunOutcome, out=None) -> None:
    out = out or sys.stdout

    def say(line: str = "") -> None:
        print(line, file=out)

    say(f"loyalty run {outcome.run_id[:8]}  as of {settings.as_of}  raw {settings.raw_dir}")
    say(f"warehouse {settings.warehouse}")
    if not settings.warehouse.exists():
        say("no warehouse was written")
    else:
        with warehouse.connect(settings.warehouse, read_only=True) as con:
            tables = warehouse.table_names(con, "core")
            if "ingest_files" in tables:
                files = _rows(
                    con,
                    """select count(*), coalesce(sum(records_read), 0), coalesce(sum(records_accepted), 0),
                              coalesce(sum(records_quarantined), 0), count(*) filter (where error is not null)
                       from core.ingest_files where first_ingested_at = (
                           select max(first_ingested_at) from core.ingest_files)
                         and first_ingested_at >= (select coalesce(max(ingested_at), '1970-01-01')
                                                   from core.order_events where run_id = ?)""",
                    [outcome.run_id],
                )[0]
                this_run = _rows(
                    con,
                    """select count(*), coalesce(sum(records_read), 0), coalesce(sum(records_accepted), 0),
                              coalesce(sum(records_quarantined), 0)
                       from core.ingest_files f
                       where exists (select 1 from core.order_events e where e.run_id = ? and e.source_file = f.path
                                     and e.file_sha256 = f.sha256)
                          or exists (select 1 from core.quarantine q where q.run_id = ? and q.source_file = f.path
                                     and q.file_sha256 = f.sha256)""",
                    [outcome.run_id, outcome.run_id],
                )[0]
                del files
                say()
                say(
                    f"this run     {this_run[0]} file(s) ingested: {this_run[1]} records read, "
                    f"{this_run[2]} accepted, {this_run[3]} quarantined"
                )
                _say_quarantined(con, outcome.run_id, say)
                total = _rows(
                    con,
                    """select count(*), coalesce(sum(records_read), 0), coalesce(sum(records_accepted), 0),
                                             coalesce(sum(records_quarantined), 0),
                                             count(*) filter (where error is not null)
                                      from core.ingest_files""",
                )[0]
                say(
                    f"all runs     {total[0]} file(s) seen: {total[1]} records read, {total[2]} accepted, "
                    f"{total[3]} quarantined, {total[4]} file(s) not ingested (unreadable or duplicate)"
                )
                reasons = _rows(con, "select reason_code, count(*) from core.quarantine group by 1 order by 2 desc, 1")
                if reasons:
                    say("quarantine   " + ", ".join(f"{code} {n}" for code, n in reasons))
                unreadable = _rows(
                    con,
                    "select path, error from core.ingest_files where error is not null and records_read = 0 "
                    "and error not like 'same content%' order by path",
                )
                for path, error in unreadable:
                    say(f"  unreadable {path}: {error}")
            if "orders" in tables:
                statuses = _rows(con, "select status, count(*) from core.orders group by 1 order by 1")
                n_orders = sum(n for _, n in statuses)
                say(f"orders       {n_orders}: " + ", ".join(f"{s} {n}" for s, n in statuses))
                customers = _rows(con, "select count(*), count(*) filter (where len(sources) > 1) from core.customers")[
                    0
                ]
                say(f"customers    {customers[0]} ({customers[1]} seen in more than one source)")
            if "customer_points" in tables:
                tiers = _rows(con, "select tier, count(*) from core.customer_points group by 1")
                order = {tier.name: i for i, tier in enumerate(rules.tiers)}
                tiers.sort(key=lambda row: order.get(row[0], len(order)))
                say("tiers        " + ", ".join(f"{tier} {n}" for tier, n in tiers))
            _say_marts(con, rules, say)
    say()
    if outcome.success:
        say("status       ok")
    else:
        for check in outcome.failed_checks:
            say(f"FAILED check {check}")
        for error in outcome.errors:
            say(f"FAILED step  {error}")
        if not outcome.failed_checks and not outcome.errors:
            say("FAILED       the run did not complete")


QUARANTINE_EXAMPLES = 5


def _say_quarantined(con, run_id: str, say) -> None:
    """Which file and record caused each quarantine of this run: the first few, and the query for the rest."""
    examples = _rows(
        con,
        """select source_file, record_locator, reason_code, reason, count(*) over () as n
           from core.quarantine where run_id = ?
           order by source_file, record_index limit ?""",
        [run_id, QUARANTINE_EXAMPLES],
    )
    for path, locator, code, reason, _ in examples:
        say(f"  quarantined {path} {locator}: {code} ({reason})")
    if examples and examples[0][4] > len(examples):
        say(f"  ... {examples[0][4] - len(examples)} more: select * from core.quarantine where run_id = '{run_id}'")


def _say_marts(con, rules: Rules, say) -> None:
    marts = warehouse.table_names(con, "marts")
    if not {"rfm_segment_summary", "points_redemption"} <= marts:
        say("marts        not built (see the failure below)")
        return
    segments = _rows(
        con, "select segment, customers from marts.rfm_segment_summary where customers > 0 order by customers desc"
    )
    if segments:
        say("segments     " + ", ".join(f"{segment} {n}" for segment, n in segments))
    points = _rows(
        con,
        """select coalesce(sum(earned), 0), coalesce(sum(bonus), 0), coalesce(sum(redeemed), 0),
                  coalesce(sum(expired), 0)
           from marts.points_redemption""",
    )[0]
    outstanding = _rows(con, "select coalesce(sum(greatest(balance, 0)), 0) from core.customer_points")[0][0]
    earned, bonus, redeemed, expired = points
    # SPEC §6 (marts.points_redemption): redemption rate = redeemed ÷ earned, breakage = expired ÷ earned.
    rate = f"{redeemed / earned:.1%}" if earned else "n/a"
    breakage = f"{expired / earned:.1%}" if earned else "n/a"
    liability = outstanding / float(rules.redeem.points_per_unit)
    say(
        f"points       earned {earned} (+ bonus {bonus}), redeemed {redeemed} (redemption rate {rate}), "
        f"expired {expired} (breakage {breakage}), outstanding {outstanding} = {liability:,.2f} "
        f"{rules.reporting_currency} liability"
    )
