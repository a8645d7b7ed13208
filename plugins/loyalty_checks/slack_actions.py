"""The Slack actions listener: Acknowledge and Silence clicked on an alert message in Slack.

    python -m loyalty_checks.slack_actions [--ping-interval 5] [--stale-after 30] [--heartbeat-every 30]

No public endpoint: it holds a Socket Mode connection (slack_sdk's built-in
`SocketModeClient`), opened with `apps.connections.open` and the app-level token of the
connection `slack_loyalty_socket` (password `xapp-…`, extra `base_url`), and answers with
the bot of `slack_loyalty_alerts` (type `slack`: password `xoxb-…`, extra `base_url`).
Contract: shared/spec/slack-actions.md.

- **Ack first.** Every envelope is acknowledged (`{"envelope_id": …}`) on the receiving
  thread as soon as it is read, before any database or HTTP work, which runs afterwards on
  a small pool of workers: a slow database never delays an ack.
- **An action** (`block_actions` on a button of the block `loyalty/<check id>`): the user
  must be allowed (catalog `slack_actions`: `allowed_users`, members of
  `allowed_usergroups` through `usergroups.users.list`; neither: everyone), else an
  ephemeral reply through the action's `response_url`. Then `actions.acknowledge` /
  `actions.silence` (actor `slack:<user id>`, source `slack`, applied once per
  `action_ts` and user), and the message is rewritten in place with `chat.update`
  (`messages.acted`: who did what, the used button gone) from the body stored when it was
  posted (`store.actions.message`), else the payload's own `message`. The monitoring
  database or PagerDuty out of reach: an ephemeral reply naming it, nothing applied, the
  message untouched. A check that no longer fires: an ephemeral reply saying so. A
  redelivery: nothing.
- **Stays connected.** The client reconnects by itself when the socket closes or Slack
  sends `disconnect`, and drops a connection whose pings go unanswered; a watchdog thread
  on top replaces the whole client when it is still not healthy after `--stale-after`
  seconds (upstream, Socket Mode clients have been seen to sit on a stale connection for
  good, or never retry after a failed `apps.connections.open`).
- **Heartbeat.** While connected, a row in `loyalty_monitoring.heartbeats` (component
  `slack_actions`) at least every `--heartbeat-every` seconds; the P1 check
  `slack_actions_stale` reports a listener silent for 5 minutes.
- **SIGTERM / SIGINT** close the socket and let running actions finish: out within 10 s.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import Any

from loyalty_checks import actions, connections, messages
from loyalty_checks.budget import DbTimeouts
from loyalty_checks.store import actions as stored
from loyalty_checks.text import slack_escape

log = logging.getLogger("loyalty_checks.slack_actions")

SOCKET = "slack_loyalty_socket"
COMPONENT = "slack_actions"                      # the heartbeat row
ACTION_IDS = (messages.ACK, *actions.SILENCES)
HEARTBEAT_DB = DbTimeouts(connect_timeout=5.0, statement_timeout=5.0, grace=3.0)
HTTP_TIMEOUT = 10                                # seconds per Slack Web API / response_url request
GROUPS_TTL = 60.0                                # seconds a user group's members are cached
STOP_GRACE = 5.0                                 # seconds running actions get after SIGTERM


@dataclass(frozen=True)
class Settings:
    ping_interval: float = 5.0     # seconds between the client's pings
    stale_after: float = 30.0      # seconds without a pong (or a connection) before the watchdog steps in
    heartbeat_every: float = 30.0  # seconds between heartbeat rows
    workers: int = 4               # actions applied at once
    alive_file: str | None = None  # touched after each heartbeat (a container's health check reads it)


def web_client(conn_id: str):
    """slack_sdk's WebClient of an Airflow `slack` connection (token, extra base_url)."""
    from airflow.providers.slack.hooks.slack import SlackHook

    return SlackHook(slack_conn_id=conn_id, timeout=HTTP_TIMEOUT).client


# ---------------------------------------------------------------- one click


class Clicks:
    """Applies the clicks of the action buttons (one `block_actions` action each)."""

    def __init__(self, bot):
        self.bot = bot                                   # WebClient of slack_loyalty_alerts
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}
        self._keys: dict[str, threading.Lock] = {}      # dedup key -> lock: a redelivery waits for the first
        self._lock = threading.Lock()

    def envelope(self, envelope: dict[str, Any]) -> None:
        """An acknowledged envelope: apply the loyalty buttons it carries, ignore the rest."""
        payload = envelope.get("payload") or {}
        if envelope.get("type") != "interactive" or payload.get("type") != "block_actions":
            log.debug("ignoring an envelope of type %s/%s", envelope.get("type"), payload.get("type"))
            return
        for action in payload.get("actions") or []:
            if action.get("action_id") in ACTION_IDS:
                try:
                    self.click(payload, action)
                except Exception:
                    log.exception("the action %s could not be handled", action.get("action_id"))

    def click(self, payload: dict[str, Any], action: dict[str, Any]) -> None:
        user = (payload.get("user") or {}).get("id") or ""
        key = f"slack:{action.get('action_ts')}:{user}"
        with self._lock:
            lock = self._keys.setdefault(key, threading.Lock())
        try:
            with lock:
                self._click(payload, action, user, key)
        finally:
            with self._lock:
                if self._keys.get(key) is lock and not lock.locked():
                    del self._keys[key]

    def _click(self, payload: dict[str, Any], action: dict[str, Any], user: str, key: str) -> None:
        from loyalty_checks.catalog import catalog

        action_id = action["action_id"]
        hours = actions.SILENCES.get(action_id)
        what = "Acknowledge" if hours is None else f"Silence {hours}h"
        container = payload.get("container") or {}
        channel = container.get("channel_id") or (payload.get("channel") or {}).get("id")
        ts = container.get("message_ts") or (payload.get("message") or {}).get("ts")
        check_id = action.get("value") or (action.get("block_id") or "").removeprefix("loyalty/")
        reply = _Reply(self.bot, payload, channel, user)
        try:
            check = catalog().check(check_id)
        except KeyError:
            reply(f"{what} failed: `{slack_escape(check_id)}` is not a check of the catalog any more.")
            return
        try:
            allowed = self.may_act(user)
        except Exception as exc:  # noqa: BLE001 - Slack's usergroups.users.list failed: refuse, say why
            log.warning("%s by %s: could not read the allowed user groups: %s", what, user, exc)
            reply(f"{what} failed: your membership of the allowed user groups could not be checked"
                  f" ({_short(exc)}). Nothing was changed.")
            return
        if not allowed:
            log.info("%s of %s by %s refused: not an allowed user", what, check.id, user)
            reply(f"You may not act on loyalty alerts: {what} is for the users and user groups listed under"
                  f" `slack_actions` in the check catalog. Nothing was changed.")
            return

        actor = f"slack:{user}"
        outcome = None
        try:
            with connections.monitoring_db(check=check) as conn:
                if hours is None:
                    outcome = actions.acknowledge(conn, check, actor, "slack", dedup_key=key)
                else:
                    outcome = actions.silence(conn, check, hours, actor, "slack", dedup_key=key)
                log.info("%s of %s by %s: %s", what, check.id, actor, outcome.status)
                if outcome.status == actions.APPLIED:
                    self.mark(conn, payload, channel, ts, action_id, outcome, actor, reply, what)
        except Exception as exc:  # noqa: BLE001 - the user is told what failed
            if outcome is not None:
                log.exception("%s of %s by %s was applied; what followed failed", what, check.id, actor)
                return
            log.warning("%s of %s by %s failed: %s", what, check.id, actor, exc)
            reply(f"{what} failed: {_failure(exc, hours is None)}. Nothing was changed and the message is"
                  " not marked: try again in a moment.")
            return
        if outcome.status == actions.NOT_FIRING:
            reply(f"`{check.id}` no longer fires: nothing to {what.lower()}. Nothing was changed.")
        elif outcome.status == actions.ALREADY:
            by = outcome.acknowledged_by or "someone"
            line = (messages.acknowledged_line(by, outcome.acknowledged_at) if outcome.acknowledged_at
                    else f"Acknowledged by {messages.actor_text(by)}")
            reply(f"`{check.id}` was acknowledged already. {line}. Nothing was changed.")

    def mark(self, conn, payload, channel, ts, action_id, outcome, actor, reply, what) -> None:
        """chat.update of the clicked message: who did what, the used button gone."""
        if outcome.silence is not None:
            line = messages.silenced_line(actor, outcome.silence["ends_at"])
        else:
            line = messages.acknowledged_line(outcome.acknowledged_by or actor, outcome.acknowledged_at)
        posted = None
        if channel and ts:
            try:
                posted = stored.message(conn, channel, ts)
            except Exception as exc:  # noqa: BLE001 - applied already: fall back to the payload's message
                log.warning("could not read the stored message %s/%s: %s", channel, ts, exc)
        body = posted["body"] if posted else _payload_body(payload.get("message"))
        new = messages.acted(body, line, action_id)
        try:
            self.bot.chat_update(channel=channel, ts=ts, text=new.get("text") or line, blocks=new.get("blocks"))
        except Exception as exc:  # noqa: BLE001 - applied; the user hears that the message stays as it was
            log.warning("chat.update of %s/%s failed: %s", channel, ts, exc)
            reply(f"{what}: done ({line}), but the message could not be updated ({_short(exc)}).")
            return
        if posted:
            try:
                stored.remember_message(conn, channel, ts, posted["check_id"], posted["evaluated_at"],
                                       posted["event"], new)
            except Exception as exc:  # noqa: BLE001 - the next action starts from the posted body: logged
                log.warning("could not store the updated message %s/%s: %s", channel, ts, exc)

    def may_act(self, user: str) -> bool:
        """Catalog `slack_actions`: listed users and members of listed user groups; neither
        listed: everyone."""
        from loyalty_checks.catalog import catalog

        rules = catalog().slack_actions
        if rules.allowed_users is None and rules.allowed_usergroups is None:
            return True
        if user in (rules.allowed_users or ()):
            return True
        return any(user in self.members(group) for group in rules.allowed_usergroups or ())

    def members(self, group: str) -> frozenset[str]:
        now = time.monotonic()
        cached = self._groups.get(group)
        if cached and now - cached[0] < GROUPS_TTL:
            return cached[1]
        users = frozenset(self.bot.usergroups_users_list(usergroup=group)["users"] or ())
        self._groups[group] = (now, users)
        return users


class _Reply:
    """An ephemeral reply to the clicking user through the action's response_url."""

    def __init__(self, bot, payload: dict[str, Any], channel: str | None, user: str):
        self.bot, self.url, self.channel, self.user = bot, payload.get("response_url"), channel, user

    def __call__(self, text: str) -> None:
        try:
            if self.url:
                from slack_sdk.webhook import WebhookClient

                sent = WebhookClient(self.url, timeout=HTTP_TIMEOUT).send(
                    text=text, response_type="ephemeral", replace_original=False)
                if sent.status_code >= 300:
                    raise RuntimeError(f"HTTP {sent.status_code}: {sent.body[:200]}")
            elif self.channel and self.user:
                self.bot.chat_postEphemeral(channel=self.channel, user=self.user, text=text)
            else:
                log.warning("no way to reply to %s: %s", self.user, text)
        except Exception as exc:  # noqa: BLE001 - nothing more to do than log it
            log.warning("the ephemeral reply to %s failed (%s): %s", self.user, exc, text)


def _payload_body(message: dict[str, Any] | None) -> dict[str, Any]:
    """The text and blocks of the message as Slack sent it in the payload."""
    message = message or {}
    return {k: message[k] for k in ("text", "blocks", "attachments") if k in message}


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _failure(exc: BaseException, acknowledging: bool) -> str:
    """What failed, for the user: the monitoring database, PagerDuty, or else what it was."""
    import psycopg

    from loyalty_checks.channels.registry import DeliveryError

    if isinstance(exc, (psycopg.Error, connections.DatabaseSilent)):
        return (f"the monitoring database (`{connections.MONITORING_DB}`) could not be reached"
                f" ({_short(exc)})")
    if acknowledging and isinstance(exc, DeliveryError):
        return f"PagerDuty could not be reached to acknowledge the incident ({_short(exc)})"
    return f"{type(exc).__name__}: {_short(exc)}"


# ---------------------------------------------------------------- the connection


class Listener:
    """The Socket Mode connection, its watchdog and the heartbeat."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.stopping = threading.Event()
        self.bot = web_client(connections.SLACK_ALERTS)
        self.clicks = Clicks(self.bot)
        self.work = ThreadPoolExecutor(settings.workers, thread_name_prefix="slack-action")
        self.running: set[Future] = set()
        self._running_lock = threading.Lock()
        self.client = None
        self.clients_made = 0
        self._unhealthy_since: float | None = None
        self._session_seen: tuple[str | None, float] = (None, time.time())

    # --- the client

    def new_client(self):
        from slack_sdk.socket_mode.builtin import SocketModeClient

        socket_web = web_client(SOCKET)
        client = SocketModeClient(
            app_token=socket_web.token, web_client=socket_web, ping_interval=self.settings.ping_interval,
            concurrency=1, logger=logging.getLogger("loyalty_checks.slack_actions.socket"))
        client.on_message_listeners.append(lambda raw: self.on_message(client, raw))
        self.clients_made += 1
        return client

    def connect(self) -> None:
        """A new client and its first connection (a failure is logged: the watchdog retries)."""
        old, self.client = self.client, self.new_client()
        self._unhealthy_since = None
        if old is not None:
            threading.Thread(target=_close_quietly, args=(old,), name="slack-old-client", daemon=True).start()
        try:
            self.client.connect()
        except Exception as exc:  # noqa: BLE001 - e.g. apps.connections.open refused: the watchdog tries again
            log.error("could not open the Socket Mode connection: %s", _short(exc))

    def on_message(self, client, raw: str) -> None:
        """On the receiving thread: ack first, then hand the work to a worker."""
        try:
            message = json.loads(raw)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        envelope_id = message.get("envelope_id")
        if not envelope_id:
            if message.get("type") in ("hello", "disconnect"):
                log.info("Slack says %s%s", message["type"],
                         f" ({message.get('reason')})" if message.get("reason") else "")
            return
        try:
            client.send_socket_mode_response({"envelope_id": envelope_id})
        except Exception as exc:  # noqa: BLE001 - Slack redelivers; the action applies once anyway
            log.warning("could not acknowledge the envelope %s: %s", envelope_id, exc)
        try:
            future = self.work.submit(self.clicks.envelope, message)
        except RuntimeError:  # shutting down
            log.warning("stopping: the envelope %s is not handled", envelope_id)
            return
        with self._running_lock:
            self.running.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future) -> None:
        with self._running_lock:
            self.running.discard(future)

    # --- health

    def healthy(self) -> bool:
        """Connected, the client's threads alive, and a pong within `stale_after`."""
        client = self.client
        if client is None or not client.is_connected():
            return False
        if not (client.current_session_runner.is_alive() and client.message_processor.is_alive()):
            return False
        if client.current_app_monitor_started and not client.current_app_monitor.is_alive():
            return False
        session = client.current_session
        if self._session_seen[0] != session.session_id:
            self._session_seen = (session.session_id, time.time())
        last = max(session.last_ping_pong_time or 0.0, self._session_seen[1])
        return time.time() - last <= self.settings.stale_after

    def watch(self) -> None:
        """The watchdog: a client unhealthy for `stale_after` seconds is replaced."""
        while not self.stopping.wait(min(self.settings.ping_interval, 1.0)):
            try:
                if self.healthy():
                    self._unhealthy_since = None
                    continue
                now = time.monotonic()
                if self._unhealthy_since is None:
                    self._unhealthy_since = now
                elif now - self._unhealthy_since >= self.settings.stale_after and not self.stopping.is_set():
                    log.warning("the Socket Mode connection is down or stale for %.0f s: replacing the client",
                                now - self._unhealthy_since)
                    self.connect()
            except Exception:
                log.exception("the watchdog failed; it carries on")

    def heartbeat(self) -> None:
        """A heartbeat row every `heartbeat_every` seconds while connected."""
        last = 0.0
        while not self.stopping.wait(0.5):
            if time.monotonic() - last < self.settings.heartbeat_every or not self.healthy():
                continue
            try:
                with connections.monitoring_db(HEARTBEAT_DB) as conn:
                    stored.beat(conn, COMPONENT, {"pid": os.getpid(), "session": self.client.session_id(),
                                           "clients": self.clients_made})
                last = time.monotonic()
                if self.settings.alive_file:
                    with open(self.settings.alive_file, "a", encoding="utf-8"):
                        os.utime(self.settings.alive_file)
            except Exception as exc:  # noqa: BLE001 - tried again in a moment; the P1 check notices a long gap
                log.warning("could not record the heartbeat: %s", _short(exc))
                last = time.monotonic() - self.settings.heartbeat_every + min(5.0, self.settings.heartbeat_every)

    # --- running

    def run(self) -> None:
        log.info("starting: Socket Mode through %s, replies through %s", SOCKET, connections.SLACK_ALERTS)
        self.connect()
        for target, name in ((self.watch, "slack-watchdog"), (self.heartbeat, "slack-heartbeat")):
            threading.Thread(target=target, name=name, daemon=True).start()
        while not self.stopping.wait(0.5):
            pass
        self.shutdown()

    def shutdown(self) -> bool:
        """Close the socket (nothing new arrives), let running actions finish; True when all did."""
        log.info("stopping")
        if self.client is not None:
            closer = threading.Thread(target=_close_quietly, args=(self.client,), name="slack-close", daemon=True)
            closer.start()
            closer.join(3.0)
        self.work.shutdown(wait=False)
        with self._running_lock:
            running = set(self.running)
        _done, left = wait_futures(running, timeout=STOP_GRACE)
        if left:
            log.error("stopped with %d action(s) unfinished (their transactions roll back)", len(left))
        else:
            log.info("stopped")
        return not left


def _close_quietly(client) -> None:
    try:
        client.close()
    except Exception as exc:  # noqa: BLE001 - a client being replaced may be broken already
        log.debug("closing a Socket Mode client: %s", exc)


def configured() -> str | None:
    """Why the listener cannot run here (None: it can): the Slack app's connections."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(SOCKET)
    except AirflowNotFoundException:
        return f"no connection {SOCKET!r} (the Slack app's xapp- token): Slack actions are off here"
    try:
        alerts = BaseHook.get_connection(connections.SLACK_ALERTS)
    except AirflowNotFoundException:
        return f"no connection {connections.SLACK_ALERTS!r}"
    if alerts.conn_type != "slack":
        return (f"{connections.SLACK_ALERTS!r} is a {alerts.conn_type!r} connection: acting from Slack needs the"
                " Web API one (type slack, the bot token)")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loyalty_checks.slack_actions",
                                     description="Apply Acknowledge and Silence clicked in Slack (Socket Mode).")
    parser.add_argument("--ping-interval", type=float, default=Settings.ping_interval,
                        help="seconds between pings to Slack (default %(default)s)")
    parser.add_argument("--stale-after", type=float, default=Settings.stale_after,
                        help="seconds without a pong before the client is replaced (default %(default)s)")
    parser.add_argument("--heartbeat-every", type=float, default=Settings.heartbeat_every,
                        help="seconds between heartbeat rows, at most 60 (default %(default)s)")
    parser.add_argument("--workers", type=int, default=Settings.workers, help="actions applied at once")
    parser.add_argument("--alive-file", help="a file touched after each heartbeat (for a container health check)")
    parser.add_argument("--log-level", default=os.environ.get("LOYALTY_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    if not 0 < args.heartbeat_every <= 60:
        parser.error("--heartbeat-every must be within (0, 60] seconds")
    if args.ping_interval <= 0 or args.stale_after < args.ping_interval or args.workers < 1:
        parser.error("--ping-interval > 0, --stale-after >= --ping-interval and --workers >= 1")
    import airflow  # noqa: F401 - configures Airflow's logging on import: ours replaces it afterwards

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.Formatter.converter = time.gmtime
    for noisy in ("slack_sdk.socket_mode.builtin", "slack_sdk.web", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))

    why_not = configured()
    if why_not:
        log.warning("%s (docs/deploy.md, Slack actions); exiting", why_not)
        return 0 if why_not.startswith("no connection " + repr(SOCKET)) else 2
    listener = Listener(Settings(args.ping_interval, args.stale_after, args.heartbeat_every, args.workers,
                                 args.alive_file))

    def stop(signum, _frame):
        log.info("%s received", signal.Signals(signum).name)
        listener.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    listener.run()
    logging.shutdown()
    # Worker threads still inside an action would hold the interpreter's exit: leave now.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
