"""The alert lifecycle, tested like `promtool test rules`: a scenario is a list of steps
(minutes after T, what the check measured, active silences) with the state and the
notifications expected after each step. Pure: no database, no Airflow.
"""

from __future__ import annotations

import datetime as dt

import pytest

from loyalty_checks.catalog import catalog, parse_duration
from loyalty_checks.evaluate import MeasurementError, evaluate
from loyalty_checks.lifecycle import CheckState, Silence, decide, initial_state
from tests.sql.rows import MIN, T

H = 60  # minutes


def check(check_id: str, **overrides):
    for key in ("repeat_after", "escalate_after"):
        if isinstance(overrides.get(key), str):
            overrides[key] = parse_duration(overrides[key], key)
    base = catalog().check(check_id).model_copy(update={"repeat_after": None})
    return base.model_copy(update=overrides)


def measured(c, values):
    """What the SQL returned: {entity id: value} for entity checks, a number or None otherwise."""
    if c.entity is None:
        return {"value": values, "details": {}, "entities": None}
    return {"value": None, "details": {}, "entities": [
        {"id": k, "name": f"{c.entity} {k}", "value": v} for k, v in values.items()]}


def advance(c, state, outcome, t, silences):
    """One step of the lifecycle: (next state, notifications)."""
    decision = decide(c, state, outcome, silences, t)
    return decision.state, decision.notifications


def silence(entity=None, until=24 * H):
    return Silence(1, "x", entity, T + until * MIN, "alice", "maintenance")


def play(c, steps):
    """Run the steps; return [(status, [(event, channels, new ids, recovered ids)])] per step."""
    state, seen = initial_state(), []
    for minutes, values, *rest in steps:
        silences = rest[0] if rest else []
        state, notes = advance(c, state, evaluate(c, measured(c, values)), T + minutes * MIN, silences)
        seen.append((state.status, [(n.event, n.channels, [e["id"] for e in n.new],
                                        [e["id"] for e in n.recovered]) for n in notes]))
    return seen


def events(seen):
    return [[e[0] for e in notes] for _, notes in seen]


def test_pending_firing_still_reminder_flapping_resolved():
    c = check("rate_limit_spikes", for_runs=2, clear_runs=2, repeat_after="3h")
    seen = play(c, [
        (0 * H, {"10": 150}),   # first breach: pending, nothing sent
        (1 * H, {"10": 150}),   # second in a row: fires
        (2 * H, {"10": 180}),   # still firing: nothing
        (3 * H, {"10": 150}),   # still nothing: 2 h < repeat_after
        (4 * H, {"10": 150}),   # 3 h after the trigger: one reminder
        (5 * H, {}),            # one clean run: not resolved yet (clear_runs 2)
        (6 * H, {"10": 101}),   # flaps back: still the same alert, nothing
        (7 * H, {"10": 99}),    # clean, not yet resolved; 3 h after the reminder: reminds again
        (8 * H, {}),            # second clean in a row: resolved
        (9 * H, {}),
    ])
    assert [s for s, _ in seen] == ["pending", "firing", "firing", "firing", "firing", "firing", "firing",
                                    "firing", "ok", "ok"]
    assert events(seen) == [[], ["trigger"], [], [], ["reminder"], [], [], ["reminder"], ["resolve"], []]
    assert seen[1][1] == [("trigger", ["slack"], ["10"], [])]
    assert seen[4][1] == [("reminder", ["slack"], [], [])]
    assert seen[8][1] == [("resolve", ["slack"], [], ["10"])]


def test_flapping_below_for_runs_never_fires():
    c = check("rate_limit_spikes", for_runs=3)
    seen = play(c, [(0, {"10": 150}), (60, {"10": 150}), (120, {}), (180, {"10": 150}), (240, {"10": 150}),
                    (300, {"10": 20})])
    assert [s for s, _ in seen] == ["pending", "pending", "ok", "pending", "pending", "ok"]
    assert events(seen) == [[]] * 6


def test_entities_added_and_recovered_one_message_per_run():
    c = check("rate_limit_spikes")
    seen = play(c, [
        (0, {"10": 150, "11": 50}),
        (60, {"10": 150, "11": 120, "12": 300}),
        (120, {"11": 130, "12": 250}),
        (180, {"12": 200}),
        (240, {"12": 20}),
    ])
    assert [n for _, n in seen] == [
        [("trigger", ["slack"], ["10"], [])],
        [("update", ["slack"], ["12", "11"], [])],       # new ones, worst first
        [("update", ["slack"], [], ["10"])],
        [("update", ["slack"], [], ["11"])],
        [("resolve", ["slack"], [], ["12"])],
    ]


def test_firing_list_is_every_announced_alert_worst_first():
    c = check("rate_limit_spikes")
    state, _ = advance(c, initial_state(), evaluate(c, measured(c, {"1": 120, "2": 500})), T, [])
    state, [note] = advance(c, state, evaluate(c, measured(c, {"1": 120, "2": 500, "3": 300})), T + 60 * MIN, [])
    assert [e["id"] for e in note.firing] == ["2", "3", "1"] and [e["id"] for e in note.new] == ["3"]
    assert note.firing[0]["value"] == 500


def test_hysteresis_recovery_threshold():
    c = check("wallet_sync_failures", recovery_threshold=0.03)
    seen = play(c, [(0, {"google": 0.06}), (60, {"google": 0.04}), (120, {"google": 0.031}),
                    (180, {"google": 0.02}), (240, {"google": 0.04})])
    assert [s for s, _ in seen] == ["firing", "firing", "firing", "ok", "ok"]
    assert events(seen) == [["trigger"], [], [], ["resolve"], []]  # 0.04 < 0.05 does not fire anew


def test_p0_pages_and_posts_reminds_in_slack_only():
    c = check("expiration_task_stale", repeat_after="4h")
    seen = play(c, [(0, 30.0), (5, 30.1), (4 * H, 34.0), (4 * H + 5, 2.0)])
    assert [n for _, n in seen] == [
        [("trigger", ["pagerduty", "slack"], ["_"], [])], [],
        [("reminder", ["slack"], [], [])],
        [("resolve", ["pagerduty", "slack"], [], ["_"])],
    ]


def test_escalation_pages_once_and_resolves_on_pagerduty():
    c = check("email_failure_rate", escalate_after="2h", repeat_after="1d")
    seen = play(c, [(0, 0.05), (1 * H, 0.05), (2 * H, 0.05), (3 * H, 0.05), (4 * H, 0.0)])
    assert [n for _, n in seen] == [
        [("trigger", ["slack"], ["_"], [])], [],
        [("escalate", ["pagerduty", "slack"], [], [])], [],
        [("resolve", ["pagerduty", "slack"], [], ["_"])],
    ]
    # A new episode starts unescalated: Slack only again.
    seen = play(c, [(0, 0.05), (60, 0.0), (120, 0.05)])
    assert seen[2][1] == [("trigger", ["slack"], ["_"], [])]


def test_escalate_after_zero_pages_with_the_trigger():
    c = catalog().check("p0_checks_stale")
    assert play(c, [(0, 40.0)])[0][1] == [("trigger", ["pagerduty", "slack"], ["_"], [])]


@pytest.mark.parametrize("policy,expected_status,expected_events", [
    ("ok", ["firing", "ok"], [["trigger"], ["resolve"]]),
    ("keep", ["firing", "firing"], [["trigger"], []]),
])
def test_no_data_policies_while_firing(policy, expected_status, expected_events):
    c = check("email_failure_rate", no_data=policy)
    seen = play(c, [(0, 0.05), (60, None)])
    assert [s for s, _ in seen] == expected_status and events(seen) == expected_events


def test_no_data_fire_policy():
    c = check("expiration_task_stale")  # no successful run at all: fires
    assert play(c, [(0, None)]) == [("firing", [("trigger", ["pagerduty", "slack"], ["_"], [])])]


def test_keep_policy_does_not_fire_from_ok():
    c = check("email_failure_rate", no_data="keep")
    assert play(c, [(0, None), (60, 0.0)]) == [("ok", []), ("ok", [])]


def test_check_silence_mutes_then_announces_when_it_ends():
    c = check("rate_limit_spikes", repeat_after="1h")
    quiet = [silence(until=2 * H)]
    seen = play(c, [
        (0, {"10": 150}, quiet),          # fires, silenced: nothing
        (60, {"10": 150}, quiet),         # no reminder either
        (120, {"10": 150}),               # the silence ended, still firing: announced now
        (180, {"10": 150}, [silence(until=5 * H)]),   # silenced again: no reminder
        (240, {}, [silence(until=5 * H)]),            # recovers: the resolve still tells
    ])
    assert [s for s, _ in seen] == ["firing"] * 4 + ["ok"]
    assert events(seen) == [[], [], ["trigger"], [], ["resolve"]]


def test_silenced_episode_that_ends_unseen_sends_nothing():
    c = check("rate_limit_spikes")
    seen = play(c, [(0, {"10": 150}, [silence()]), (60, {}, [silence()]), (120, {})])
    assert events(seen) == [[], [], []]


def test_entity_silence_mutes_only_that_entity():
    c = check("rate_limit_spikes")
    store_10 = [silence(entity="10")]
    seen = play(c, [(0, {"10": 150}, store_10), (60, {"10": 150, "11": 120}, store_10),
                    (120, {"10": 150}, store_10)])
    assert [n for _, n in seen] == [[], [("trigger", ["slack"], ["11"], [])], [("resolve", ["slack"], [], ["11"])]]


def test_error_then_recovery_keeps_the_alert():
    c = check("expiration_task_stale")
    state, _ = advance(c, initial_state(), evaluate(c, measured(c, 30.0)), T, [])
    state, notes = advance(c, state, MeasurementError(c.id, "timeout"), T + 5 * MIN, [])
    assert [(n.event, n.channels) for n in notes] == [("error", ["pagerduty", "slack"])]
    state, notes = advance(c, state, MeasurementError(c.id, "timeout"), T + 7 * MIN, [])
    assert notes == []  # reported once per streak
    assert state.status == "firing" and state.error_since == (T + 5 * MIN).isoformat()
    state, notes = advance(c, state, evaluate(c, measured(c, 31.0)), T + 10 * MIN, [])
    assert [(n.event, n.channels) for n in notes] == [("error_resolve", ["pagerduty", "slack"])]
    assert state.status == "firing" and state.error_since is None


def test_resolve_carries_how_long_it_fired():
    c = check("expiration_task_stale")
    state, _ = advance(c, initial_state(), evaluate(c, measured(c, 30.0)), T, [])
    _, [note] = advance(c, state, evaluate(c, measured(c, 1.0)), T + 95 * MIN, [])
    assert note.event == "resolve" and note.firing_since == T.isoformat()


def test_state_survives_a_json_round_trip():
    """The state is stored as JSON between runs (a restart continues where it stopped)."""
    import json

    c = check("rate_limit_spikes", for_runs=2)
    state, _ = advance(c, initial_state(), evaluate(c, measured(c, {"10": 150})), T, [])
    state = CheckState.from_json(json.loads(json.dumps(state.to_json())))
    state, notes = advance(c, state, evaluate(c, measured(c, {"10": 150})), T + dt.timedelta(hours=1), [])
    assert [n.event for n in notes] == ["trigger"]


# ---------------------------------------------------------------- routing is configuration

def test_routes_decide_the_channels():
    slack_only = check("rate_limit_spikes")
    paging = slack_only.model_copy(update={"routes": ("pagerduty", "slack")})
    steps = [(0, {"10": 150}), (60, {"10": 150}), (120, {})]
    assert [n for _, n in play(slack_only, steps)][0] == [("trigger", ["slack"], ["10"], [])]
    assert [n for _, n in play(paging, steps)] == [
        [("trigger", ["pagerduty", "slack"], ["10"], [])], [], [("resolve", ["pagerduty", "slack"], [], ["10"])]]
    digest_only = slack_only.model_copy(update={"routes": ("digest",)})
    assert [s for s, _ in play(digest_only, steps)] == ["firing", "firing", "ok"]
    assert events(play(digest_only, steps)) == [[], [], []]  # reported in the weekly digest instead


def test_an_older_time_decides_nothing():
    c = check("rate_limit_spikes")
    state, _ = advance(c, initial_state(), evaluate(c, measured(c, {"10": 150})), T + 60 * MIN, [])
    decision = decide(c, state, evaluate(c, measured(c, {})), [], T)
    assert decision.applied is False and decision.notifications == [] and decision.state is state


def test_an_error_of_a_silenced_check_is_not_reported_but_resolves_quietly():
    c = check("expiration_task_stale")
    state, notes = advance(c, initial_state(), MeasurementError(c.id, "down"), T, [silence()])
    assert notes == [] and state.error_since == T.isoformat()


def test_fail_open_pages_a_firing_check_once_while_blind():
    from loyalty_checks.lifecycle import SentWhileBlind, fail_open

    c = check("expiration_task_stale", repeat_after="4h")
    firing, healthy = evaluate(c, measured(c, 30.0)), evaluate(c, measured(c, 1.0))
    [note] = fail_open(c, firing, None, T)
    assert (note.event, note.channels) == ("trigger", ["pagerduty"])
    assert fail_open(c, firing, SentWhileBlind(paged_at=T), T + 5 * MIN) == []   # paged already
    assert fail_open(c, firing, SentWhileBlind(paged_at=T), T + 4 * H * MIN) != []  # long ago: again
    assert fail_open(c, healthy, None, T) is None  # nothing pages: the task fails (run red)
    assert fail_open(check("rate_limit_spikes"), evaluate(check("rate_limit_spikes"), measured(
        check("rate_limit_spikes"), {"1": 500})), None, T) is None  # Slack-only checks do not fail open
    # Back with the state: the trigger decided then does not page again; the error reported while
    # blind is resolved.
    blind = SentWhileBlind(paged_at=T, error_reported_at=T + 5 * MIN)
    d = decide(c, initial_state(), firing, [], T + 10 * MIN, blind)
    assert [(n.event, n.channels) for n in d.notifications] == [("error_resolve", ["pagerduty", "slack"]),
                                                                ("trigger", ["slack"])]
    # A send from before the latest applied outcome is history: ignored.
    d = decide(c, d.state, evaluate(c, measured(c, 1.0)), [], T + 15 * MIN, blind)
    assert [(n.event, n.channels) for n in d.notifications] == [("resolve", ["pagerduty", "slack"])]
