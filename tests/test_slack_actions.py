"""The Slack actions listener, for real: `python -m loyalty_checks.slack_actions` as its own
process, over a real WebSocket to the Slack stand-in (demo/slack_standin.py; slack_sdk's
own Socket Mode client, no mock), on a real PostgreSQL, PagerDuty at the capture server.

A click is pushed as Slack delivers it (an `interactive` envelope with a `block_actions`
payload) on an alert whose state was made firing first (`pipeline.settle`), and whose
message was stored as the Web API channel stores it (`store.actions.remember_message`)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from demo.slack_standin import SlackStandin
from loyalty_checks import lifecycle
from loyalty_checks.catalog import DEFAULT_CATALOG, catalog
from loyalty_checks.messages import ACK, Notice, acted, slack_message
from loyalty_checks.store import actions as stored
from loyalty_checks.store import ensure_schema
from tests.conftest import ROOT, ROUTING_KEY, connection_env
from tests.proxy import TcpProxy, pg_conn_via, pg_upstream
from tests.sql.rows import MIN, H, T
from tests.test_actions import fire

P0 = catalog().check("expiration_task_stale")          # pages: an acknowledge tells PagerDuty
P1 = catalog().check("rate_limit_spikes")              # Slack only
CHANNEL = "C0ALERTS"
ALICE, BOB, CAROL, MALLORY = "U0ALICE", "U0BOB", "U0CAROL", "U0MALLORY"
ONCALL = "S0ONCALL"
SILENCE_IDS = {"loyalty_silence_1h", "loyalty_silence_4h", "loyalty_silence_24h"}


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def standin():
    server = SlackStandin(usergroups={ONCALL: [CAROL]}).start()
    yield server
    server.stop()


@pytest.fixture
def mon(pg, loyalty_db, airflow_conns):
    """The test's loyalty_monitoring (autocommit) and AIRFLOW_CONN_* of this process (fire())."""
    with psycopg.connect(pg.conninfo(loyalty_db), autocommit=True) as conn:
        ensure_schema(conn)
        yield conn


class Listener:
    """The listener process: started on the stand-in, stopped (SIGTERM) at the end."""

    def __init__(self, env: dict[str, str], log: Path, args: tuple[str, ...] = ()):
        self.log = log
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loyalty_checks.slack_actions", "--ping-interval", "1", "--stale-after", "4",
             "--heartbeat-every", "1", *args],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> float:
        """SIGTERM; seconds until it exited."""
        start = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"the listener ignored SIGTERM for {timeout} s:\n{self.output()}") from None
        return time.monotonic() - start


def listener_env(pg, loyalty_db, sink, standin) -> dict[str, str]:
    """The environment of a listener: checks.md's connections, the Slack app's at the stand-in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env.update(connection_env(pg, loyalty_db, sink.url))
    env["AIRFLOW_CONN_SLACK_LOYALTY_ALERTS"] = json.dumps(
        {"conn_type": "slack", "password": "xoxb-test-bot", "extra": {"channel": CHANNEL, "base_url": standin.api_url}})
    env["AIRFLOW_CONN_SLACK_LOYALTY_SOCKET"] = json.dumps(
        {"conn_type": "slack", "password": "xapp-test-app", "extra": {"base_url": standin.api_url}})
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "plugins"), str(ROOT)])
    return env


@pytest.fixture
def listener(pg, loyalty_db, sink, standin, tmp_path):
    """listener(monitoring=None, catalog=None) -> a running listener connected to the stand-in."""
    started: list[Listener] = []

    def start(monitoring: str | None = None, catalog_file: Path | None = None, args: tuple[str, ...] = ()
              ) -> Listener:
        env = listener_env(pg, loyalty_db, sink, standin)
        if monitoring:
            env["AIRFLOW_CONN_LOYALTY_MONITORING_DB"] = monitoring
        if catalog_file:
            env["LOYALTY_CHECKS_CATALOG"] = str(catalog_file)
        proc = Listener(env, tmp_path / f"listener-{len(started)}.log", args)
        started.append(proc)
        try:
            standin.wait_connected(len(standin.connections) + 1, timeout=60)
        except TimeoutError:
            raise AssertionError(f"the listener never connected:\n{proc.output()}") from None
        return proc

    yield start
    for proc in started:
        proc.stop()
    for proc in started:  # pytest shows it when the test failed
        print(f"--- {proc.log.name}\n{proc.output()[-6000:]}")


def post_alert(conn, check, ts: str, t: dt.datetime = T) -> dict:
    """The alert message of the check's trigger, as the Web API channel posted and stored it."""
    [note] = fire(conn, check, t).notifications
    cat = catalog()
    notice = Notice(check=check, event="trigger", t=t, evaluation={"value": 200.0, "entities": [],
                                                                   "entities_total": 0},
                    dag_id=f"loyalty_{check.severity.lower()}_checks", run_url="http://af/dags/x/runs/r",
                    runbook_url=cat.runbook_link(check.id), entity_cap=cat.entity_cap, decided=note.to_dict())
    body = slack_message(notice, interactive=True, console_url=f"http://af/loyalty/checks/{check.id}")
    stored.remember_message(conn, CHANNEL, ts, check.id, t, "trigger", body)
    return body


def buttons(body: dict) -> list[str]:
    return [e.get("action_id") for b in body["blocks"] if b["type"] == "actions" for e in b["elements"]]


def context_lines(body: dict, posted: dict) -> list[str]:
    """The context lines of `body` that the posted message had not."""
    before = [b for b in posted["blocks"] if b["type"] == "context"]
    return [e["text"] for b in body["blocks"] if b["type"] == "context" and b not in before for e in b["elements"]]


def state(conn, check) -> lifecycle.CheckState:
    row = conn.execute("SELECT lifecycle FROM loyalty_monitoring.check_state WHERE check_id = %s",
                       (check.id,)).fetchone()
    return lifecycle.CheckState.from_json(row[0])


def actions_of(conn, check) -> list[dict]:
    return stored.actions_of(conn, check.id, T - 24 * H)


def settle_down(seconds: float = 1.5) -> None:
    """Give a listener time to do what it should not (a second update, a second page)."""
    time.sleep(seconds)


# ---------------------------------------------------------------- tests


def test_acknowledge_acks_at_once_tells_pagerduty_and_marks_the_message(mon, sink, standin, listener):
    body = post_alert(mon, P0, "1700000000.000100")
    assert ACK in buttons(body)
    sink.take()
    listener()

    envelope = standin.block_action(ALICE, ACK, P0.id, CHANNEL, "1700000000.000100", action_ts="1700000100.000001")
    assert standin.wait_ack(envelope["envelope_id"]) < 3.0
    [update] = standin.wait_call("chat.update")
    args = update["args"]
    assert (args["channel"], args["ts"]) == (CHANNEL, "1700000000.000100")
    assert update["token"] == "xoxb-test-bot"
    assert ACK not in buttons(args) and SILENCE_IDS <= set(buttons(args))
    [line] = context_lines(args, body)
    assert line.startswith(f"Acknowledged by <@{ALICE}> at ") and line.endswith(" UTC")
    assert args["blocks"] == acted(body, line, ACK)["blocks"]  # the rest of the message as it was posted

    [page] = [r["body"] for r in sink.take("/pagerduty")]
    assert page["event_action"] == "acknowledge" and page["dedup_key"] == "loyalty/expiration_task_stale"
    assert page["routing_key"] == ROUTING_KEY
    assert state(mon, P0).acknowledged_by == f"slack:{ALICE}"
    [done] = actions_of(mon, P0)
    assert (done["action"], done["actor"], done["source"]) == ("ack", f"slack:{ALICE}", "slack")
    # the stored body is the updated one: a later action starts from it
    standin.wait_for(lambda: stored.message(mon, CHANNEL, "1700000000.000100")["body"]["blocks"] == args["blocks"],
                     what="the updated body stored")
    assert [c["token"] for c in standin.calls_of("apps.connections.open")] == ["xapp-test-app"]
    assert standin.responses == []  # no ephemeral reply: the message says it


def test_the_same_envelope_twice_applies_once(mon, sink, standin, listener):
    post_alert(mon, P0, "1700000000.000200")
    sink.take()
    listener()
    first = standin.block_action(ALICE, ACK, P0.id, CHANNEL, "1700000000.000200", action_ts="1700000200.000001")
    standin.wait_call("chat.update")
    again = standin.push(first["payload"], envelope_id=first["envelope_id"])  # Slack redelivers
    assert again["retry_attempt"] == 1
    assert standin.wait_ack(first["envelope_id"]) < 3.0
    standin.wait_for(lambda: len([a for a in standin.acks if a["envelope_id"] == first["envelope_id"]]) == 2,
                     what="the second ack")
    settle_down()
    assert len(standin.calls_of("chat.update")) == 1
    assert len(sink.take("/pagerduty")) == 1
    assert len(actions_of(mon, P0)) == 1
    assert standin.responses == []


def test_silence_from_slack_adds_the_silence_and_marks_the_message(mon, standin, listener):
    body = post_alert(mon, P1, "1700000000.000300")
    mon.execute("DELETE FROM loyalty_monitoring.slack_messages")  # not stored: the payload's message is used
    listener()
    standin.block_action(BOB, "loyalty_silence_4h", P1.id, CHANNEL, "1700000000.000300",
                         message={"type": "message", "text": body["text"], "blocks": body["blocks"]})
    [update] = standin.wait_call("chat.update")
    args = update["args"]
    [silence] = mon.execute("SELECT author, reason, check_id, entity_id, ends_at - starts_at"
                            " FROM loyalty_monitoring.silences").fetchall()
    assert silence == (f"slack:{BOB}", "from Slack", P1.id, None, dt.timedelta(hours=4))
    assert (args["channel"], args["ts"]) == (CHANNEL, "1700000000.000300")
    assert not SILENCE_IDS & set(buttons(args)) and ACK in buttons(args)
    [line] = context_lines(args, body)
    assert line.startswith("Silenced until ") and line.endswith(f" by <@{BOB}>")
    [done] = actions_of(mon, P1)
    assert (done["action"], done["actor"], done["source"]) == ("silence_4h", f"slack:{BOB}", "slack")


def test_only_allowed_users_and_groups_may_act(mon, sink, standin, listener, tmp_path):
    import yaml

    data = yaml.safe_load(DEFAULT_CATALOG.read_text(encoding="utf-8"))
    data["slack_actions"] = {"allowed_users": [ALICE], "allowed_usergroups": [ONCALL]}
    site = tmp_path / "site-checks.yaml"
    site.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    post_alert(mon, P0, "1700000000.000400")
    sink.take()
    listener(catalog_file=site)

    refused = standin.block_action(MALLORY, ACK, P0.id, CHANNEL, "1700000000.000400")
    assert standin.wait_ack(refused["envelope_id"]) < 3.0
    [reply] = standin.wait_response()
    assert reply["path"] == "/response/" + refused["payload"]["response_url"].rsplit("/", 1)[1]
    assert reply["body"]["response_type"] == "ephemeral" and "may not" in reply["body"]["text"]
    assert reply["body"].get("replace_original") is False
    settle_down()
    assert standin.calls_of("chat.update") == [] and sink.take("/pagerduty") == []
    assert state(mon, P0).acknowledged_by is None and actions_of(mon, P0) == []

    standin.block_action(CAROL, ACK, P0.id, CHANNEL, "1700000000.000400")  # a member of S0ONCALL
    standin.wait_call("chat.update")
    [lookup] = standin.calls_of("usergroups.users.list")
    assert lookup["args"]["usergroup"] == ONCALL and lookup["token"] == "xoxb-test-bot"
    assert state(mon, P0).acknowledged_by == f"slack:{CAROL}"
    assert len(standin.responses) == 1


def test_not_firing_and_already_acknowledged_get_an_ephemeral_reply(mon, sink, standin, listener):
    listener()
    standin.block_action(ALICE, ACK, P1.id, CHANNEL, "1700000000.000500")  # P1 never fired
    [reply] = standin.wait_response()
    assert "no longer fires" in reply["body"]["text"] and reply["body"]["response_type"] == "ephemeral"

    post_alert(mon, P0, "1700000000.000600")
    sink.take()
    standin.block_action(ALICE, ACK, P0.id, CHANNEL, "1700000000.000600")
    standin.wait_call("chat.update")
    standin.block_action(BOB, ACK, P0.id, CHANNEL, "1700000000.000600")  # a second person, later
    [_, reply] = standin.wait_response(2)
    assert "acknowledged already" in reply["body"]["text"] and f"<@{ALICE}>" in reply["body"]["text"]
    settle_down()
    assert len(standin.calls_of("chat.update")) == 1 and len(sink.take("/pagerduty")) == 1
    assert state(mon, P0).acknowledged_by == f"slack:{ALICE}"


def test_monitoring_database_down_ephemeral_error_and_nothing_marked(pg, loyalty_db, mon, sink, standin, listener):
    post_alert(mon, P0, "1700000000.000700")
    sink.take()
    with TcpProxy(pg_upstream(pg)) as proxy:
        proc = listener(monitoring=pg_conn_via(proxy, pg, loyalty_db))
        standin.wait_for(lambda: stored.last_beat(mon, "slack_actions"), what="a heartbeat")
        proxy.blackhole()  # the monitoring database goes silent: connections hang, nothing answers

        envelope = standin.block_action(ALICE, ACK, P0.id, CHANNEL, "1700000000.000700")
        assert standin.wait_ack(envelope["envelope_id"]) < 3.0  # acked before any database work
        [reply] = standin.wait_response(timeout=30)
        text = reply["body"]["text"]
        assert reply["body"]["response_type"] == "ephemeral"
        assert "Acknowledge failed" in text and "monitoring database" in text and "loyalty_monitoring_db" in text
        assert standin.calls_of("chat.update") == [] and sink.take("/pagerduty") == []
        assert state(mon, P0).acknowledged_by is None and actions_of(mon, P0) == []

        proxy.heal()  # back: the same click again is applied
        standin.block_action(ALICE, ACK, P0.id, CHANNEL, "1700000000.000700")
        standin.wait_call("chat.update", timeout=30)
        assert state(mon, P0).acknowledged_by == f"slack:{ALICE}"
        assert proc.proc.poll() is None


def test_pagerduty_unreachable_ephemeral_error_and_nothing_applied(mon, sink, standin, listener):
    post_alert(mon, P0, "1700000000.000800")
    sink.take()
    listener()
    sink.fail("/pagerduty", 400, times=1)  # refused: no retry
    standin.block_action(ALICE, ACK, P0.id, CHANNEL, "1700000000.000800")
    [reply] = standin.wait_response(timeout=30)
    assert "Acknowledge failed" in reply["body"]["text"] and "PagerDuty" in reply["body"]["text"]
    settle_down()
    assert standin.calls_of("chat.update") == []
    assert state(mon, P0).acknowledged_by is None and actions_of(mon, P0) == []


def test_reconnects_on_disconnect_a_dropped_socket_and_unanswered_pings(mon, sink, standin, listener):
    post_alert(mon, P1, "1700000000.000900")
    listener()
    standin.disconnect()  # Slack's refresh
    second = standin.wait_connected(2)
    assert len(standin.calls_of("apps.connections.open")) == 2
    standin.drop()  # reset, no close frame
    standin.wait_connected(3, timeout=30)
    standin.freeze()  # stale: TCP up, no pong
    frozen_at = time.time()
    third = standin.wait_connected(4, timeout=30)
    assert third["opened_at"] - frozen_at < 15
    assert len(standin.calls_of("apps.connections.open")) == 4
    assert second["hello_at"] and third["hello_at"]

    envelope = standin.block_action(ALICE, "loyalty_silence_1h", P1.id, CHANNEL, "1700000000.000900")
    assert standin.wait_ack(envelope["envelope_id"]) < 3.0
    assert standin.acks[-1]["connection"] == third["id"]
    standin.wait_call("chat.update")
    assert mon.execute("SELECT count(*) FROM loyalty_monitoring.silences").fetchone()[0] == 1


def test_heartbeat_then_sigterm_stops_within_10_seconds(mon, standin, listener, tmp_path):
    alive = tmp_path / "alive"
    proc = listener(args=("--alive-file", str(alive)))
    first = standin.wait_for(lambda: stored.last_beat(mon, "slack_actions"), what="a heartbeat")
    later = standin.wait_for(lambda: (b := stored.last_beat(mon, "slack_actions")) and b > first and b,
                             what="a second heartbeat")
    assert later - first < dt.timedelta(seconds=5)
    assert time.time() - alive.stat().st_mtime < 5  # the container's health check reads it
    took = proc.stop()
    assert took < 10.0 and proc.proc.returncode == 0, proc.output()
    standin.wait_for(lambda: standin.connections[-1]["closed_at"], what="the socket closed")
    assert "stopped" in proc.output()


def test_without_the_slack_app_it_says_so_and_exits(pg, loyalty_db, sink, standin):
    env = listener_env(pg, loyalty_db, sink, standin)
    command = [sys.executable, "-m", "loyalty_checks.slack_actions"]
    off = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in env.items() if k != "AIRFLOW_CONN_SLACK_LOYALTY_SOCKET"})
    assert off.returncode == 0 and "no connection 'slack_loyalty_socket'" in off.stderr
    env["AIRFLOW_CONN_SLACK_LOYALTY_ALERTS"] = json.dumps({"conn_type": "slackwebhook", "password": sink.url})
    webhook = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert webhook.returncode == 2 and "needs the Web API one (type slack" in webhook.stderr
    assert standin.calls == []


def test_the_demo_clicks_a_posted_message_from_its_page_or_script(mon, sink, standin, listener):
    """make demo-ui: a message posted with chat.postMessage, clicked with
    `python -m demo.slack_standin click CHECK`, shown updated on the stand-in's page."""
    import urllib.request

    from slack_sdk import WebClient

    body = post_alert(mon, P0, "0")
    mon.execute("DELETE FROM loyalty_monitoring.slack_messages")
    posted = WebClient(token="xoxb-test-bot", base_url=standin.api_url).chat_postMessage(
        channel=CHANNEL, text=body["text"], blocks=body["blocks"])
    stored.remember_message(mon, posted["channel"], posted["ts"], P0.id, T, "trigger", body)
    listener()
    clicked = subprocess.run([sys.executable, "-m", "demo.slack_standin", "click", P0.id, "--user", ALICE,
                              "--url", standin.url], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert clicked.returncode == 0, clicked.stderr
    [update] = standin.wait_call("chat.update")
    assert (update["args"]["channel"], update["args"]["ts"]) == (posted["channel"], posted["ts"])
    with urllib.request.urlopen(f"{standin.url}/demo", timeout=10) as page:  # noqa: S310 - the local stand-in
        html = page.read().decode()
    assert f"Acknowledged by &lt;@{ALICE}&gt;" in html and "Silence 4h" in html and ">Acknowledge<" not in html


def test_the_watchdog_retries_when_slack_refuses_to_open_a_connection(mon, standin, listener):
    """slack_sdk's client never retries a failed first apps.connections.open by itself: the
    watchdog replaces it until a connection is open."""
    standin.fail_api("apps.connections.open", "internal_error", times=2)
    proc = listener()
    opens = standin.calls_of("apps.connections.open")
    assert len(opens) == 3 and len(standin.connections) == 1
    assert opens[2]["at"] - opens[0]["at"] < 20
    assert proc.output().count("replacing the client") == 2


# ---------------------------------------------------------------- with the P0 DAG

def test_p0_posts_buttons_a_click_acknowledges_it_and_no_reminder_follows(db, run_dag, sink, standin, listener,
                                                                          monkeypatch):
    """The P0 DAG (dag.test()) posts its alert through the Web API with the buttons, the real
    listener applies a click on that very message, the next runs send no reminder while it is
    acknowledged, and the resolve says who acknowledged it."""
    from tests.test_dag_runs import P0 as P0_DAG
    from tests.test_dag_runs import expire_points_success, google_runs

    monkeypatch.setenv("AIRFLOW_CONN_SLACK_LOYALTY_ALERTS", json.dumps(  # this process runs the DAG
        {"conn_type": "slack", "password": "xoxb-test-bot", "extra": {"channel": CHANNEL,
                                                                      "base_url": standin.api_url}}))
    expire_points_success(db, T - 31 * H, "first")  # expiration_task_stale fires (> 26 h)
    google_runs(db, 0.1, 0.2)
    dr, states = run_dag(P0_DAG, T)
    assert dr.state == "success", states
    [post] = standin.calls_of("chat.postMessage")
    message = post["args"]
    assert message["channel"] == CHANNEL and post["token"] == "xoxb-test-bot"
    [block] = [b for b in message["blocks"] if b.get("block_id") == "loyalty/expiration_task_stale"]
    assert [e.get("action_id") for e in block["elements"]][:4] == [
        ACK, "loyalty_silence_1h", "loyalty_silence_4h", "loyalty_silence_24h"]
    [(_, ts)] = list(standin.messages)
    assert [p["event_action"] for p in (r["body"] for r in sink.take("/pagerduty"))] == ["trigger"]

    listener()
    envelope = standin.block_action(ALICE, ACK, "expiration_task_stale", CHANNEL, ts, action_ts="1700000200.000001")
    assert standin.wait_ack(envelope["envelope_id"]) < 3.0
    [update] = standin.wait_call("chat.update")
    assert (update["args"]["channel"], update["args"]["ts"]) == (CHANNEL, ts)
    assert ACK not in buttons(update["args"])
    [ack] = [r["body"] for r in sink.take("/pagerduty")]
    assert (ack["event_action"], ack["dedup_key"]) == ("acknowledge", "loyalty/expiration_task_stale")

    run_dag(P0_DAG, T + 4 * H)  # still firing, past repeat_after (4h): no reminder while acknowledged
    assert len(standin.calls_of("chat.postMessage")) == 1 and sink.take("/pagerduty") == []
    expire_points_success(db, T + 4 * H + MIN, "second")  # the expiration task runs again: resolved
    run_dag(P0_DAG, T + 4 * H + 5 * MIN)
    resolve = standin.calls_of("chat.postMessage")[-1]["args"]
    assert resolve["text"].startswith("[P0] RESOLVED")
    assert f"Acknowledged by <@{ALICE}> at " in json.dumps(resolve["blocks"])
    assert not any(b.get("block_id") for b in resolve["blocks"])  # a resolve carries no buttons
