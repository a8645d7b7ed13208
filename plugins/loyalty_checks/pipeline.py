"""A check's run as one pipeline, one signature per stage (as Alertmanager's notify pipeline):

    measure(conn, check, t)             -> Evaluation | MeasurementError   (measure.py, evaluate.py)
    decide(check, state, outcome, ...)  -> Decision                        (lifecycle.py: the only one that decides)
    record(conn, check, run, outcome)   -> notifications to send           (store/alerts.py stores it)
    deliver(conn, notice, channel, run) -> sent now or before              (deliver.py senders, state.once)

The DAG tasks (tasks.py) are thin adapters over these stages; check tests (testing.py)
and backtests run `measure` and `decide` through `Replay`, in memory, with nothing sent.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Sequence

from loyalty_checks import lifecycle
from loyalty_checks.catalog import Check
from loyalty_checks.evaluate import ERROR, Evaluation, MeasurementError, evaluate
from loyalty_checks.lifecycle import CheckState, Decision, SentWhileBlind, Silence
from loyalty_checks.store import alerts as state


def measure(conn, check: Check, t: dt.datetime, sql: str | None = None) -> Evaluation | MeasurementError:
    """The check's SQL as of T (read only) and its threshold; a failure is an outcome too."""
    from loyalty_checks.measure import measure_sql

    try:
        text = sql if sql is not None else check.sql_path.read_text(encoding="utf-8")
        return evaluate(check, measure_sql(conn, check, text, t))
    except Exception as exc:  # noqa: BLE001 - every failure of a check is reported, not raised
        return MeasurementError(check.id, f"{type(exc).__name__}: {exc}"[:2000])


def record(conn, check: Check, run: state.RunRef, outcome: Evaluation | MeasurementError,
           blind: SentWhileBlind | None = None) -> list[dict[str, Any]]:
    """Decide under the check's state lock and store it; returns the notifications to send.

    The same T decided before gets the same decision back (a re-run sends nothing new);
    only an evaluation may replace an earlier error of the same T (a retry that worked).
    """
    with state.locked_state(conn, check.id) as current:
        before = state.decided_before(conn, check.id, run.t)
        if before is not None:
            status, notes = before
            if isinstance(outcome, MeasurementError):
                return notes if status == ERROR else []
            if status != ERROR:
                return notes
        silences = state.active_silences(conn, check.id, run.t)
        decision = lifecycle.decide(check, current, outcome, silences, run.t, blind)
        state.store(conn, check, run, outcome, decision, silences)
    return [n.to_dict() for n in decision.notifications]


def deliver(conn, notice, channel: str, run_id: str) -> bool:
    """Send one notice on one channel at most once; True if it was sent now."""
    from loyalty_checks import channels

    key = state.NotificationKey(notice.check.id, notice.t, str(notice.event), channel)
    return state.once(conn, key, run_id, lambda: channels.get(channel).send(notice))


class Replay:
    """The lifecycle in memory from a clean state: what the DAGs would decide, T after T.

    Check tests and backtests feed it outcomes in order of T; nothing is stored or sent.
    """

    def __init__(self, check: Check):
        self.check = check
        self.state = CheckState()

    def step(self, outcome: Evaluation | MeasurementError, t: dt.datetime,
             silences: Sequence[Silence] = ()) -> Decision:
        decision = lifecycle.decide(self.check, self.state, outcome, silences, t)
        self.state = decision.state
        return decision

    def status(self, outcome: Evaluation | MeasurementError) -> str:
        """The status a check test expects after a step: no_data / error for such an
        outcome, else the check's alert status (ok, pending, firing)."""
        if outcome.status in (ERROR, "no_data"):
            return outcome.status
        return str(self.state.status)
