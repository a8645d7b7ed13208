"""A check's run: four stages, one signature each, and the one runner that chains them.

    measure(check, T, conn)                       -> Measurement   (measure.py: the SQL, read only)
    decide(check, measurement, state, silences)   -> Decision      (evaluate.py's threshold, then
                                                                    lifecycle.py: the only one that decides)
    record(store, check, decision)                -> the store remembers it (store/alerts.py, or memory)
    deliver(conn, notice, channel, run_id)        -> sent at most once (channels/, store/alerts.once)

`run` is measure's output through decide and record under the store's lock. The DAG tasks
(tasks.py) run it with the alert state in loyalty_monitoring (`AlertStore`); check tests
(testing.py) and backtests (backtest.py) with `MemoryStore`, the state carried in memory
from step to step and nothing sent.
"""

from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
from typing import Callable, Iterator, Protocol, Sequence

from loyalty_checks import lifecycle
from loyalty_checks.catalog import Check
from loyalty_checks.evaluate import Evaluation, MeasurementError, evaluate, excluded_hours
from loyalty_checks.lifecycle import CheckState, Decision, Known, Notification, SentWhileBlind, Silence
from loyalty_checks.measure import Measurement, measure  # noqa: F401 - the first stage, re-exported


def outcome_of(check: Check, measurement: Measurement,
               excluded: dict[str, set[dt.datetime]] | None = None) -> Evaluation | MeasurementError:
    """The threshold (or a baseline check's learned one, `excluded` hours left out of the
    entities' history) on a measurement, or its error."""
    if measurement.error is not None:
        return MeasurementError(check.id, measurement.error)
    try:
        return evaluate(check, measurement.rows(), measurement.t, excluded)
    except Exception as exc:  # noqa: BLE001 - a value the threshold cannot compare is the check's failure
        return MeasurementError(check.id, f"{type(exc).__name__}: {exc}"[:2000])


def decide(check: Check, measurement: Measurement, state: CheckState, silences: Sequence[Silence] = (),
           blind: SentWhileBlind | None = None) -> Decision:
    """The threshold, then the lifecycle: the check's next state and what to tell people."""
    return _decide(check, outcome_of(check, measurement), measurement.t, state, silences, blind)


def _decide(check: Check, outcome: Evaluation | MeasurementError, t: dt.datetime, state: CheckState,
            silences: Sequence[Silence], blind: SentWhileBlind | None) -> Decision:
    decision = lifecycle.decide(check, state, outcome, silences, t, blind)
    decision.outcome, decision.silences = outcome, tuple(silences)
    return decision


class Store(Protocol):
    """Where a check's state lives between runs (store/alerts.AlertStore, MemoryStore)."""

    def deciding(self, check: Check, t: dt.datetime): ...   # context manager -> Known, lock held
    def record(self, check: Check, decision: Decision) -> None: ...


def record(store: Store, check: Check, decision: Decision) -> None:
    store.record(check, decision)


def run(check: Check, measurement: Measurement, store: Store, blind: SentWhileBlind | None = None) -> Decision:
    """decide and record under the store's lock: two workers cannot both decide, and a T
    decided before gets that decision back (lifecycle.decided_again) instead of a new one.
    A baseline check is evaluated there too: the store knows which hours its history leaves out."""
    return _settle(check, lambda known: outcome_of(check, measurement, known.excluded), measurement.t, store, blind)


def settle(check: Check, outcome: Evaluation | MeasurementError, t: dt.datetime, store: Store,
           blind: SentWhileBlind | None = None) -> Decision:
    """`run` from the threshold's outcome (tests of the store feed outcomes directly)."""
    return _settle(check, lambda known: outcome, t, store, blind)


def _settle(check: Check, outcome_for: Callable[[Known], Evaluation | MeasurementError], t: dt.datetime,
            store: Store, blind: SentWhileBlind | None) -> Decision:
    with store.deciding(check, t) as known:
        outcome = outcome_for(known)
        again = lifecycle.decided_again(known.earlier, outcome)
        if again is not None:
            return Decision(known.state, [Notification.from_dict(n) for n in again], applied=False,
                            outcome=outcome)
        decision = _decide(check, outcome, t, known.state, known.silences, blind)
        record(store, check, decision)
    return decision


def deliver(conn, notice, channel: str, run_id: str) -> bool:
    """Send one notice on one channel at most once; True if it was sent now."""
    from loyalty_checks import channels
    from loyalty_checks.store import actions, alerts

    key = alerts.NotificationKey(notice.check.id, notice.t, str(notice.event), channel)

    def send() -> None:
        receipt = channels.get(channel).send(notice)
        if receipt:  # where the message is (Slack: channel and ts), to update it in place later
            actions.remember_message(conn, receipt["channel"], receipt["ts"], notice.check.id, notice.t,
                                     str(notice.event), receipt["body"])

    return alerts.once(conn, key, run_id, send)


class MemoryStore:
    """One check's state in memory, from a clean state, without silences: check tests and
    backtests feed it T after T; nothing is stored or sent."""

    def __init__(self, silences: Sequence[Silence] = ()):
        self.state = CheckState()
        self.silences = tuple(silences)
        self.firing: list[tuple[dt.datetime, list[dict]]] = []   # a baseline check's firing evaluations
        self.t: dt.datetime | None = None

    @contextmanager
    def deciding(self, check: Check, t: dt.datetime) -> Iterator[Known]:
        self.t, excluded = t, None
        if check.baseline is not None:
            since = t - check.baseline.span - check.baseline.window  # older firing windows are out of reach
            self.firing = [(at, es) for at, es in self.firing if at >= since]
            excluded = excluded_hours(check, t, [(at, es) for at, es in self.firing if at < t],
                                      [(s.entity_id, s.starts_at or t, s.ends_at) for s in self.silences])
        yield Known(self.state, self.silences, excluded=excluded)

    def record(self, check: Check, decision: Decision) -> None:
        self.state = decision.state
        outcome = decision.outcome
        if check.baseline is not None and isinstance(outcome, Evaluation) and outcome.entities:
            self.firing.append((self.t, outcome.entities))
