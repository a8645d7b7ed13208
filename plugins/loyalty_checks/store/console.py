"""Read the alert state in loyalty_monitoring for the console (read only, bound parameters only).

The alerts now come from `check_state.lifecycle` (lifecycle.py's stored JSON: `alerts`
maps an entity key, "_" for a check without entities, to {"status", "since", "entity":
{"id", "name", "value", ...}}), unpacked, matched with silences, ranked and paged in SQL
(jsonb_each) so that 10,000 firing entities stay one query and no Python loop. Every
function takes an open connection (see store.read_only) and returns plain dicts with
timezone-aware datetimes. The stored backtests are read through store/backtests.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Sequence

from loyalty_checks.store import rows as _rows

SCALAR = "_"  # the entity key of a check without entities (lifecycle.SCALAR)


def current_and_planned_silences(conn, check_ids: Sequence[str], t: dt.datetime) -> list[dict[str, Any]]:
    """Silences of `check_ids` that have not ended at `t` (in force and planned), ending soonest
    last. Which of them are in force is lifecycle.silence_active's to say."""
    return _rows(conn, """
        SELECT id, check_id, entity_id, starts_at, ends_at, author, reason, created_at
        FROM loyalty_monitoring.silences
        WHERE check_id = ANY(%(checks)s) AND ends_at > %(t)s
        ORDER BY ends_at DESC, id
        """, {"checks": list(check_ids), "t": t})


def last_notifications(conn, check_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """check id -> the latest notification sent {"event", "t", "channels", "sent_at", "run_id"}."""
    rows = _rows(conn, """
        SELECT c.check_id, last.evaluated_at AS t, last.event, sent.channels, sent.sent_at, last.run_id
        FROM unnest(%(checks)s::text[]) AS c(check_id)
        CROSS JOIN LATERAL (
            SELECT n.evaluated_at, n.event, n.run_id FROM loyalty_monitoring.notifications n
            WHERE n.check_id = c.check_id AND n.sent_at IS NOT NULL
            ORDER BY n.evaluated_at DESC, n.sent_at DESC LIMIT 1) last
        CROSS JOIN LATERAL (
            SELECT array_agg(n.channel ORDER BY n.channel) AS channels, max(n.sent_at) AS sent_at
            FROM loyalty_monitoring.notifications n
            WHERE n.check_id = c.check_id AND n.evaluated_at = last.evaluated_at
              AND n.event = last.event AND n.sent_at IS NOT NULL) sent
        """, {"checks": list(check_ids)})
    return {r.pop("check_id"): r for r in rows}


def latest_evaluations(conn, check_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """check id -> its latest evaluation and alert state (checks never evaluated are missing)."""
    rows = _rows(conn, """
        SELECT c.check_id, e.evaluated_at AS last_t, e.status, e.value, e.threshold, e.error,
               e.alert_status, e.dag_id, e.run_id, e.entities_total,
               jsonb_array_length(e.entities) AS entities_breaching,
               s.status AS state, s.since AS state_since,
               (s.lifecycle->>'error_since')::timestamptz AS error_since
        FROM unnest(%(checks)s::text[]) AS c(check_id)
        JOIN LATERAL (
            SELECT * FROM loyalty_monitoring.evaluations e
            WHERE e.check_id = c.check_id ORDER BY e.evaluated_at DESC LIMIT 1) e ON true
        LEFT JOIN loyalty_monitoring.check_state s ON s.check_id = c.check_id
        """, {"checks": list(check_ids)})
    return {r.pop("check_id"): r for r in rows}


EVALUATION = ("t", "status", "value", "alert_status", "error", "silenced", "dag_id", "run_id", "entities_total",
              "entities_breaching")


def evaluations(conn, check_id: str, since: dt.datetime, until: dt.datetime | None,
                limit: int) -> tuple[list[tuple], bool]:
    """The evaluations of one check in [since, until], oldest first, at most the latest `limit`,
    as tuples of EVALUATION (20,000 of them are the history API's default); and whether older
    ones were left out."""
    rows = conn.execute("""
        SELECT evaluated_at AS t, status, value, alert_status, error, silenced,
               dag_id, run_id, entities_total, jsonb_array_length(entities) AS entities_breaching
        FROM loyalty_monitoring.evaluations
        WHERE check_id = %(check)s AND evaluated_at >= %(since)s
          AND (%(until)s::timestamptz IS NULL OR evaluated_at <= %(until)s)
        ORDER BY evaluated_at DESC LIMIT %(limit)s
        """, {"check": check_id, "since": since, "until": until, "limit": limit + 1}).fetchall()
    truncated = len(rows) > limit
    return rows[:limit][::-1], truncated


def notifications(conn, check_id: str, since: dt.datetime, until: dt.datetime | None,
                  newest: int | None = None) -> list[dict[str, Any]]:
    """Notifications of one check decided in [since, until], oldest first (only the `newest`
    ones when given): one row per event with the channels it reached (`channels`) and those it
    did not (`failed`)."""
    found = _rows(conn, """
        SELECT evaluated_at AS t, event,
               coalesce(array_agg(channel ORDER BY channel) FILTER (WHERE sent_at IS NOT NULL), '{}') AS channels,
               coalesce(array_agg(channel ORDER BY channel) FILTER (WHERE sent_at IS NULL), '{}') AS failed,
               max(sent_at) AS sent_at, max(last_error) AS last_error, min(run_id) AS run_id
        FROM loyalty_monitoring.notifications
        WHERE check_id = %(check)s AND evaluated_at >= %(since)s
          AND (%(until)s::timestamptz IS NULL OR evaluated_at <= %(until)s)
        GROUP BY evaluated_at, event
        ORDER BY evaluated_at DESC, event DESC LIMIT %(newest)s
        """, {"check": check_id, "since": since, "until": until, "newest": newest})
    return found[::-1]


def notification_buckets(conn, check_id: str, since: dt.datetime, until: dt.datetime, seconds: float,
                         first: int = 5) -> list[dict[str, Any]]:
    """Notifications of one check decided in [since, until] in buckets of `seconds` from
    `since` (a few pixels of a chart), oldest first: how many (`n`), and the `first` of them
    as {"t", "event", "channels"} (the channels reached), oldest first."""
    return _rows(conn, """
        SELECT count(*) AS n,
               to_jsonb((array_agg(jsonb_build_object('t', t, 'event', event, 'channels', channels)
                                   ORDER BY t, event))[1:%(first)s]) AS notes
        FROM (SELECT evaluated_at AS t, event,
                     coalesce(array_agg(channel ORDER BY channel) FILTER (WHERE sent_at IS NOT NULL), '{}')
                         AS channels
              FROM loyalty_monitoring.notifications
              WHERE check_id = %(check)s AND evaluated_at >= %(since)s AND evaluated_at <= %(until)s
              GROUP BY evaluated_at, event) x
        GROUP BY date_bin(make_interval(secs => %(seconds)s), t, %(since)s)
        ORDER BY min(t)
        """, {"check": check_id, "since": since, "until": until, "seconds": seconds, "first": first})


def silences_between(conn, check_id: str, since: dt.datetime, until: dt.datetime | None) -> list[dict[str, Any]]:
    """Silences of one check that overlap [since, until] (ended ones too)."""
    return _rows(conn, """
        SELECT id, check_id, entity_id, starts_at, ends_at, author, reason
        FROM loyalty_monitoring.silences
        WHERE check_id = %(check)s AND ends_at > %(since)s
          AND (%(until)s::timestamptz IS NULL OR starts_at <= %(until)s)
        ORDER BY starts_at, id
        """, {"check": check_id, "since": since, "until": until})


def silence(conn, silence_id: int) -> dict[str, Any] | None:
    """One silence as the API shows it, or None."""
    found = _rows(conn, "SELECT id, check_id, entity_id, starts_at, ends_at, author, reason"
                        " FROM loyalty_monitoring.silences WHERE id = %(id)s", {"id": silence_id})
    return found[0] if found else None


def silence_exists(conn, silence_id: int, t: dt.datetime | None = None) -> dict[str, Any] | None:
    """The silence `silence_id` and whether it may still be expired at `t` (default now):
    `active` when it has not ended (lifecycle.silence_active, whenever it starts: a planned
    silence may be expired before it starts)."""
    from loyalty_checks.lifecycle import Silence, silence_active

    found = silence(conn, silence_id)
    if found is None:
        return None
    t = t or dt.datetime.now(dt.timezone.utc)
    not_started = Silence(found["id"], found["check_id"], found["entity_id"], found["ends_at"], found["author"],
                          found["reason"])
    return {**found, "active": silence_active(not_started, t)}


def evaluation_buckets(conn, check_id: str, since: dt.datetime, until: dt.datetime,
                       seconds: float) -> list[dict[str, Any]]:
    """The evaluations of one check in [since, until] in buckets of `seconds` from `since`
    (a pixel column of a chart), oldest first: first and last T, lowest and highest value,
    whether the alert fired, how many and how many errors, the first error's T and message.

    A year of a P0 check is 105,120 rows: one hash aggregate over narrow columns (no ordered
    aggregate, which would sort them all), then the few error messages by primary key."""
    buckets = _rows(conn, """
        SELECT min(evaluated_at) AS t0, max(evaluated_at) AS t1, min(value) AS vmin, max(value) AS vmax,
               bool_or(alert_status = 'firing') AS firing, count(*) AS n,
               count(*) FILTER (WHERE status = 'error') AS errors,
               min(evaluated_at) FILTER (WHERE status = 'error') AS error_t
        FROM loyalty_monitoring.evaluations
        WHERE check_id = %(check)s AND evaluated_at >= %(since)s AND evaluated_at <= %(until)s
        GROUP BY date_bin(make_interval(secs => %(seconds)s), evaluated_at, %(since)s)
        ORDER BY t0
        """, {"check": check_id, "since": since, "until": until, "seconds": seconds})
    error_ts = [b["error_t"] for b in buckets if b["errors"]]
    messages = dict(conn.execute(
        "SELECT evaluated_at, error FROM loyalty_monitoring.evaluations"
        " WHERE check_id = %s AND evaluated_at = ANY(%s)", (check_id, error_ts)).fetchall()) if error_ts else {}
    for b in buckets:
        b["error"] = messages.get(b["error_t"])
    return buckets


def baseline_bands(conn, check_id: str, since: dt.datetime, until: dt.datetime) -> list[dict[str, Any]]:
    """A baseline check's band at each evaluation in [since, until], oldest first: the
    expected count and the 5 %-95 % band of the entity it judged most improbable then
    (details.worst). An hourly check: a year is 8,760 rows."""
    return _rows(conn, """
        SELECT evaluated_at AS t, (details->'worst'->>'expected')::float8 AS expected,
               (details->'worst'->'band'->>0)::float8 AS low, (details->'worst'->'band'->>1)::float8 AS high,
               details->'worst'->>'name' AS name
        FROM loyalty_monitoring.evaluations
        WHERE check_id = %(check)s AND evaluated_at >= %(since)s AND evaluated_at <= %(until)s
          AND details->'worst' ? 'band'
        ORDER BY evaluated_at
        """, {"check": check_id, "since": since, "until": until})


SCAN_LIMIT = 20_000  # evaluations the timeline looks through: 70 days of a P0 check, 2 years of a P1 check


def alert_changes(conn, check_id: str, since: dt.datetime, until: dt.datetime, limit: int) -> list[dict[str, Any]]:
    """Evaluations of one check in [since, until] that changed its alert status or failed,
    newest first: at most `limit`, among the newest SCAN_LIMIT evaluations."""
    return _rows(conn, """
        SELECT t, status, value, alert_status, previous, error, dag_id, run_id FROM (
            SELECT t, status, value, alert_status, error, dag_id, run_id,
                   lead(alert_status) OVER (ORDER BY t DESC) AS previous
            FROM (  -- the newest SCAN_LIMIT evaluations, backwards through the primary key
                SELECT evaluated_at AS t, status, value, alert_status, error, dag_id, run_id
                FROM loyalty_monitoring.evaluations
                WHERE check_id = %(check)s AND evaluated_at >= %(since)s AND evaluated_at <= %(until)s
                ORDER BY evaluated_at DESC LIMIT %(scan)s) newest) e
        WHERE status = 'error' OR (previous IS NOT NULL AND previous <> alert_status)
        ORDER BY t DESC LIMIT %(limit)s
        """, {"check": check_id, "since": since, "until": until, "limit": limit, "scan": SCAN_LIMIT})


def check_states(conn, check_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """check id -> its latest run and T, and who acknowledged its episode, for the checks that
    have an alert now (read once per check: `lifecycle` holds every alert of the check)."""
    rows = _rows(conn, """
        SELECT check_id, last_run_id, last_evaluated_at, lifecycle->>'acknowledged_by' AS acknowledged_by,
               (lifecycle->>'acknowledged_at')::timestamptz AS acknowledged_at
        FROM loyalty_monitoring.check_state
        WHERE check_id = ANY(%(checks)s) AND status IN ('firing', 'pending')
        """, {"checks": list(check_ids)})
    return {r.pop("check_id"): r for r in rows}


# The alerts now, one JSON object per entity, ranked in SQL: 10,000 firing entities are
# sorted, counted and paged by PostgreSQL, not in Python. Which alerts a silence covers is
# lifecycle.silence_covers' to say: the query returns each alert's key (lifecycle.py's key
# of `alerts`), and the keys that a silence may cover (%(whole)s: checks with a silence of
# the whole check in force; %(entities)s: [{"check_id", "entity_id"}] of entity silences).
# %(checks)s: [{"check_id", "rank", "sign", "info": {what every alert of the check shares}}].
_RANKED = """
    WITH c AS (
        SELECT * FROM jsonb_to_recordset(%(checks)s::jsonb) AS c(check_id text, rank int, sign float8, info jsonb)
    ), a AS MATERIALIZED (
        SELECT c.check_id, c.rank, c.sign, al.key, x.state, al.value->>'since' AS since,
               CASE WHEN al.key = '_' THEN NULL ELSE coalesce(x.entity->>'id', al.key) END AS entity_id,
               x.entity->>'name' AS name,
               CASE WHEN jsonb_typeof(x.entity->'value') = 'number' THEN (x.entity->>'value')::double precision
               END AS value,
               CASE WHEN x.entity ? 'band' THEN jsonb_build_object(  -- a baseline check's entity: its usual level
                   'expected', x.entity->'expected', 'band', x.entity->'band', 'label', x.entity->'label',
                   'window_hours', x.entity->'window_hours') END AS baseline
        FROM c
        JOIN loyalty_monitoring.check_state s ON s.check_id = c.check_id AND s.status IN ('firing', 'pending')
        CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(s.lifecycle->'alerts') = 'object'
                                           THEN s.lifecycle->'alerts' ELSE '{}'::jsonb END) al
        CROSS JOIN LATERAL (SELECT al.value->>'status' AS state, al.value->'entity' AS entity) x
        WHERE x.state IN ('firing', 'pending') AND (%(state)s::text IS NULL OR x.state = %(state)s::text)
    )
"""
# The ranking: P0 first, then catalog order (rank), firing before pending, the worst value
# first, then by name. Sorting by it with OFFSET and LIMIT lets PostgreSQL keep only the
# top offset + limit rows (a bounded heap sort), not sort all 10,000.
_ORDER = "rank, state <> 'firing', sign * value NULLS LAST, name COLLATE \"C\", entity_id COLLATE \"C\""
# One alert as the API shows it: what its check shares, and its own entity and state
# ("silenced" and "silence_ids" are added by the caller, see above).
_ALERT = """c.info || jsonb_build_object(
    'entity_id', p.entity_id, 'entity_name', CASE WHEN p.entity_id IS NULL THEN NULL ELSE p.name END,
    'state', p.state, 'since', p.since, 'value', p.value) || coalesce(p.baseline, '{}'::jsonb)"""

# The page (kind 0, ranked, with the counts over all alerts), then the keys of every alert
# that a silence may cover (kind 1): one pass over the alerts for both.
_PAGE = _RANKED + (  # noqa: S608 - constants only, no input
    """
    , page AS MATERIALIZED (SELECT * FROM a ORDER BY """ + _ORDER + """ OFFSET %(offset)s LIMIT %(limit)s
    ), counts AS MATERIALIZED (  -- once, not once per row of the page
        SELECT count(*) AS total, count(*) FILTER (WHERE state = 'firing') AS firing,
               count(*) FILTER (WHERE state = 'pending') AS pending
        FROM a
    )
    SELECT kind, alert, check_id, key, total, firing, pending FROM (
    SELECT 0 AS kind, """ + _ALERT + """ AS alert, p.check_id, p.key, n.total, n.firing, n.pending,
           p.rank, p.state, p.sign, p.value, p.name, p.entity_id
    FROM page p JOIN c USING (check_id) CROSS JOIN counts n
    UNION ALL
    SELECT 1, NULL, a.check_id, a.key, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM a
    WHERE a.check_id = ANY(%(whole)s::text[])
       OR (a.check_id, a.key) IN (SELECT x.check_id, x.entity_id
                                  FROM jsonb_to_recordset(%(entities)s::jsonb) AS x(check_id text, entity_id text))
    ) u ORDER BY kind, """ + _ORDER + """
""")


def ranked_alerts_page(conn, checks: list[dict[str, Any]], state: str | None, offset: int, limit: int,
                       whole: Sequence[str] = (), entities: Sequence[tuple[str, str]] = ()
                       ) -> tuple[list[tuple[dict[str, Any], str, str]], dict[str, int] | None, list[tuple[str, str]]]:
    """One page of the ranked alerts as (alert dict, check id, key); the counts over all of
    them (None past the last page); and the (check id, key) of every alert that a silence
    may cover: of the checks `whole` and of the (check id, entity id) `entities`."""
    rows = conn.execute(_PAGE, {"checks": _json(checks), "state": state, "offset": offset, "limit": limit,
                                "whole": list(whole),
                                "entities": _json([{"check_id": c, "entity_id": e} for c, e in entities])}).fetchall()
    page = [r for r in rows if r[0] == 0]
    counts = dict(zip(("total", "firing", "pending"), page[0][4:7], strict=True)) if page else None
    return [(r[1], r[2], r[3]) for r in page], counts, [(r[2], r[3]) for r in rows if r[0] == 1]


def _json(value: Any):
    from psycopg.types.json import Jsonb

    return Jsonb(value)
