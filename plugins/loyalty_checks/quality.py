"""Alert quality: what a check's alerts did, one definition for the backtest and the history.

    python -m loyalty_checks.quality [--since 28d] [--json FILE] [--dsn URL]

`Tally` is the one place that counts (spec/backtest.md): fed one evaluation after the
other (T, the check's alert status after it, whether it failed, the notifications it
sent), it gives the notifications, pages (notifications that go to PagerDuty),
episodes (from the check starting to fire to it no longer firing: `trigger` to
`resolve`), flaps (episodes starting less than three evaluation intervals after the
previous one ended), the firing share, median and longest time to resolve, errors, and
the noisiest entities. The backtest feeds it replayed decisions (backtest.py); this
module's CLI feeds it what `loyalty_monitoring` recorded: every evaluation, and the
notifications actually sent (a notification counts once per event, on the channels it
went out on). It reads only; it also lists the active silences and those ending soon.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from loyalty_checks import units
from loyalty_checks.channels import registry
from loyalty_checks.units import DURATION, cron_interval, duration

UTC = dt.timezone.utc
FLAP_INTERVALS = 3          # an episode starting within 3 evaluation intervals of the last one is a flap
NOISIEST = 5                # entities listed per check
ENDING_SOON = dt.timedelta(days=1)


# ---------------------------------------------------------------- schedule



# ---------------------------------------------------------------- the one tally

def notification_entities(note: dict[str, Any]) -> list[str]:
    """The entity ids a notification names: new ones for a trigger or an update, the
    recovered ones for a resolve, the firing ones for a reminder or an escalation; none
    for a check without entities (its one alert is "_")."""
    event = str(note.get("event"))
    key = {"trigger": "new", "update": "new", "resolve": "recovered"}.get(event, "firing")
    if event in ("error", "error_resolve"):
        return []
    return [str(e["id"]) for e in note.get(key) or [] if str(e.get("id")) != "_"]


def ordered_channels(channels: Iterable[str]) -> list[str]:
    found = set(channels)
    known = registry.names()
    return [c for c in known if c in found] + sorted(found - set(known))


def _iso(t: dt.datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


class Tally:
    """Counts one check's evaluations, in order of T; `summary()` is the spec's summary.

    Keeps the notifications and episodes (they grow with events, not evaluations)."""

    def __init__(self, interval: dt.timedelta):
        self.interval = interval
        self.evaluations = self.errors = self.firing = 0
        self.notifications: list[dict[str, Any]] = []
        self.episodes: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None
        self._last_end: dt.datetime | None = None
        self.flaps = 0
        self._noisy: Counter[str] = Counter()

    def add(self, t: dt.datetime, alert_status: str, error: bool, notifications: Iterable[dict[str, Any]] = ()
            ) -> None:
        """One evaluation: the check's status after it (ok, pending, firing), whether it
        failed, and its notifications ({event, channels, entities})."""
        self.evaluations += 1
        self.errors += bool(error)
        firing = alert_status == "firing"
        self.firing += firing
        if firing and self._open is None:
            if self._last_end is not None and t - self._last_end < FLAP_INTERVALS * self.interval:
                self.flaps += 1
            self._open = {"start": t, "end": None, "entities": []}
            self.episodes.append(self._open)
        elif not firing and self._open is not None:
            self._open["end"] = self._last_end = t
            self._open = None
        for note in notifications:
            item = {"t": _iso(t), "event": str(note["event"]), "channels": ordered_channels(note["channels"]),
                    "entities": list(note.get("entities") or [])}
            self.notifications.append(item)
            if item["event"] in ("trigger", "update"):
                self._noisy.update(item["entities"])
                episode = self._open or (self.episodes[-1] if self.episodes else None)
                if episode is not None:
                    episode["entities"] += [e for e in item["entities"] if e not in episode["entities"]]

    def episodes_json(self) -> list[dict[str, Any]]:
        return [{"start": _iso(e["start"]), "end": _iso(e["end"]), "entities": list(e["entities"])}
                for e in self.episodes]

    def summary(self) -> dict[str, Any]:
        resolved = [(e["end"] - e["start"]).total_seconds() for e in self.episodes if e["end"] is not None]
        return {
            "notifications": len(self.notifications),
            "pages": sum(registry.pager() in n["channels"] for n in self.notifications),
            "episodes": len(self.episodes),
            "flaps": self.flaps,
            "firing_share": round(self.firing / self.evaluations, 4) if self.evaluations else 0.0,
            "median_resolve_seconds": statistics.median(resolved) if resolved else None,
            "longest_resolve_seconds": max(resolved) if resolved else None,
            "errors": self.errors,
            "evaluations": self.evaluations,
            "noisiest": [{"id": k, "notifications": n} for k, n in self._noisy.most_common(NOISIEST)],
        }


# ---------------------------------------------------------------- history (loyalty_monitoring)

def sent_notifications(decided: list[dict[str, Any]], sent: dict[str, list[str]]) -> list[dict[str, Any]]:
    """What went out for one evaluation: each decided notification sent on at least one
    channel, with the channels it was sent on (and one sent without a decision, as the
    fail-open page, without entities)."""
    out, seen = [], set()
    for note in decided or []:
        event = str(note.get("event"))
        if event in sent and event not in seen:
            seen.add(event)
            out.append({"event": event, "channels": sent[event], "entities": notification_entities(note)})
    out += [{"event": e, "channels": ch, "entities": []} for e, ch in sent.items() if e not in seen]
    return out


def history(conn, since: dt.datetime, until: dt.datetime | None = None, check_id: str | None = None,
            cat=None) -> dict[str, Any]:
    """The quality of every check over (since, until] from what loyalty_monitoring recorded."""
    from loyalty_checks.catalog import Severity, catalog
    from loyalty_checks.store import reports

    cat = cat or catalog()
    until = until or dt.datetime.now(UTC)
    tallies: dict[str, Tally] = {}
    for cid, severity, t, status, alert_status, decided, sent in reports.evaluation_history(conn, since, until,
                                                                                            check_id):
        tally = tallies.get(cid)
        if tally is None:
            spec = cat.dags.get(severity) or cat.dags[Severity.P1]
            tally = tallies[cid] = Tally(cron_interval(spec.schedule))
        tally.add(t, alert_status, status == "error", sent_notifications(decided, sent))
    active = [{"id": s["id"], "check_id": s["check_id"], "entity_id": s["entity_id"],
               "starts_at": _iso(s["starts_at"]), "ends_at": _iso(s["ends_at"]), "author": s["author"],
               "reason": s["reason"], "ends_within_a_day": s["ends_at"] <= until + ENDING_SOON}
              for s in reports.silences_active_at(conn, until)]
    return {"since": _iso(since), "until": _iso(until),
            "checks": {cid: tallies[cid].summary() for cid in sorted(tallies)},
            "silences": active}


# ---------------------------------------------------------------- text

def format_seconds(seconds: float | None) -> str:
    from loyalty_checks.text import format_duration

    return "—" if seconds is None else format_duration(dt.timedelta(seconds=seconds))


def summary_table(rows: list[tuple[str, dict[str, Any]]], first: str = "check") -> str:
    """A plain-text table of summaries, one row each."""
    head = [first, "notifications", "pages", "episodes", "flaps", "firing", "median resolve",
            "longest", "errors", "evaluations", "noisiest entities"]
    body = [[name, str(s["notifications"]), str(s["pages"]), str(s["episodes"]), str(s["flaps"]),
             f"{s['firing_share'] * 100:.1f}%", format_seconds(s.get("median_resolve_seconds")),
             format_seconds(s.get("longest_resolve_seconds")), str(s["errors"]), str(s.get("evaluations", "")),
             ", ".join(f"{n['id']} ({n['notifications']})" for n in s.get("noisiest", [])[:3]) or "—"]
            for name, s in rows]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i in (0, len(head) - 1) else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip() for row in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report_text(result: dict[str, Any]) -> str:
    out = [f"Alert quality from {result['since']} to {result['until']} (what loyalty_monitoring recorded)", ""]
    if result["checks"]:
        out.append(summary_table(list(result["checks"].items())))
    else:
        out.append("No evaluations recorded in this period.")
    out += ["", f"Active silences: {len(result['silences'])}"]
    for s in result["silences"]:
        soon = "  (ends within a day)" if s["ends_within_a_day"] else ""
        out.append(f"  #{s['id']} {s['check_id']}{' entity ' + s['entity_id'] if s['entity_id'] else ''}"
                   f" until {s['ends_at']} by {s['author']}: {s['reason']}{soon}")
    return "\n".join(out)


def digest_section(conn, t: dt.datetime, cat=None, days: int = 7, top: int = 3) -> str:
    """The weekly digest's "alert quality, last 7 days" lines (Slack mrkdwn)."""
    from loyalty_checks.text import format_time, slack_escape

    result = history(conn, t - dt.timedelta(days=days), t, cat=cat)
    checks = result["checks"]
    noisy = sorted(((cid, s) for cid, s in checks.items() if s["pages"] or s["flaps"] or s["notifications"]),
                   key=lambda kv: (-kv[1]["pages"], -kv[1]["flaps"], -kv[1]["notifications"], kv[0]))[:top]
    lines = [f"`{cid}`: {s['pages']} pages, {s['flaps']} flaps, {s['notifications']} notifications,"
             f" {s['episodes']} episodes, firing {s['firing_share'] * 100:.1f}% of the time" for cid, s in noisy]
    week = t + dt.timedelta(days=7)
    ending = [s for s in result["silences"] if dt.datetime.fromisoformat(s["ends_at"]) <= week]
    lines += [f"🔕 `{s['check_id']}`{' ' + slack_escape(s['entity_id']) if s['entity_id'] else ''} silence ends"
              f" {format_time(s['ends_at'])}" for s in ending]
    return "\n".join(lines) or "no notifications, no flaps, no silences ending this week"


# ---------------------------------------------------------------- CLI

class UsageError(ValueError):
    """Bad command-line input: exit 2 with the message."""


def parse_since(text: str, now: dt.datetime) -> dt.datetime:
    """'28d' (before now) or an ISO time (UTC when it has no offset)."""
    if DURATION.match(text or ""):
        return now - duration(text)
    return parse_time(text, "--since")


def parse_time(text: str, what: str) -> dt.datetime:
    try:
        return units.parse_time(text)
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    from loyalty_checks import connections

    ap = argparse.ArgumentParser(prog="python -m loyalty_checks.quality", description=__doc__.split("\n\n")[0])
    ap.add_argument("--since", default="28d", help="a duration before now (28d) or an ISO time (default 28d)")
    ap.add_argument("--until", help=argparse.SUPPRESS)   # for tests and reports of a past period
    ap.add_argument("--check", help="one check only")
    ap.add_argument("--json", type=Path, help="write the result as JSON")
    ap.add_argument("--dsn", help="loyalty_monitoring_db as a PostgreSQL URL (default: the Airflow connection)")
    args = ap.parse_args(argv)
    try:
        until = parse_time(args.until, "--until") if args.until else dt.datetime.now(UTC)
        since = parse_since(args.since, until)
        if since >= until:
            raise UsageError(f"--since {args.since!r} is not before {until.isoformat()}")
        from loyalty_checks.catalog import catalog

        if args.check and args.check not in {c.id for c in catalog().checks}:
            raise UsageError(f"--check: unknown check {args.check!r} (known: {', '.join(c.id for c in catalog().checks)})")
    except UsageError as exc:
        print(f"quality: {exc}", file=sys.stderr)
        return 2
    import psycopg

    try:
        with connections.cli_db(args.dsn) as conn:
            result = history(conn, since, until, args.check)
    except psycopg.errors.UndefinedTable as exc:
        print(f"quality: {exc.diag.message_primary}: no check has recorded anything in this database"
              " (point --dsn or loyalty_monitoring_db at the alert state)", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        print(f"quality: cannot read loyalty_monitoring: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(report_text(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
