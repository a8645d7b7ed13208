"""A local stand-in for Slack: the Web API methods the package calls and Socket Mode.

What it serves (shared/spec/slack-actions.md, "The Socket Mode exchange"):

- HTTP, under `/api/`: `apps.connections.open` (an app-level token `xapp-…` only) answers
  `{"ok": true, "url": "ws://127.0.0.1:PORT/socket"}`; `chat.postMessage` and
  `chat.update` (a bot token `xoxb-…`) answer `{"ok": true, "channel", "ts"}` and keep the
  message; `usergroups.users.list` answers the members of the groups given to the
  constructor. `POST /response/<id>` is a `response_url`: the replies (ephemeral ones) are
  kept. A wrong kind of token gets `{"ok": false, "error": "not_allowed_token_type"}`, as
  Slack answers.
- A WebSocket server (the `websockets` package) at `/socket`: sends `{"type": "hello"}` on
  every new connection; a test pushes envelopes (`push`, `block_action`), and the acks
  (`{"envelope_id": …}`) are kept with their arrival time. It can send
  `{"type": "disconnect", "reason": "refresh_requested"}` (`disconnect`), drop the
  connection without a close frame (`drop`), or stop answering pings and stop reading
  altogether (`freeze`: a stale connection, TCP still up).

Everything received is kept for assertions: `calls` (Web API, in order), `acks`,
`responses` (response_url), `received` (every WebSocket text frame), `connections`.

    standin = SlackStandin(usergroups={"S0ONCALL": ["U0ALICE"]}).start()
    standin.api_url                       # the connections' extra base_url
    env = standin.block_action("U0ALICE", "loyalty_ack", "my_check", "C0ALERTS", "1700000000.000100")
    standin.wait_ack(env["envelope_id"])  # -> seconds from push to ack

`python -m demo.slack_standin --port 8026` runs it on its own and prints what arrives; its
page `/demo` shows the posted messages with clickable buttons, and
`python -m demo.slack_standin click CHECK [--action loyalty_ack]` clicks one from a script.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import ServerConnection, serve

from demo.capture_server import reply

BOT_METHODS = ("chat.postMessage", "chat.update", "usergroups.users.list")


class SlackStandin:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, ws_port: int = 0,
                 usergroups: dict[str, list[str]] | None = None, on_event: Callable[[str, Any], None] | None = None):
        self.host = host
        self.usergroups = {k: list(v) for k, v in (usergroups or {}).items()}
        self.on_event = on_event            # called with (kind, record) for each event (the demo prints them)
        self.calls: list[dict[str, Any]] = []       # Web API calls: {"method", "token", "args", "at"}
        self.responses: list[dict[str, Any]] = []   # response_url posts: {"path", "body", "at"}
        self.acks: list[dict[str, Any]] = []        # {"envelope_id", "at", "connection"}
        self.pushed: dict[str, dict[str, Any]] = {}  # envelope id -> {"envelope", "at", "connection"}
        self.received: list[dict[str, Any]] = []    # every text frame: {"text", "at", "connection"}
        self.connections: list[dict[str, Any]] = []  # {"id", "opened_at", "hello_at", "closed_at", "frozen"}
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}  # (channel, ts) -> the message as it is now
        self.api_faults: list[tuple[str, str]] = []  # (method, error) answered before normal replies
        self._cond = threading.Condition()
        self._ts = itertools.count(1)
        self._live: dict[int, ServerConnection] = {}
        self._loop = asyncio.new_event_loop()
        self._ws_server = None
        self._ws_port = ws_port
        self._ws_thread: threading.Thread | None = None
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self._http_thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.httpd.server_address[1]}"

    @property
    def api_url(self) -> str:
        """The `base_url` extra of the Slack connections."""
        return f"{self.url}/api/"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self._ws_port}/socket"

    def start(self) -> "SlackStandin":
        started = threading.Event()

        def run_loop():
            asyncio.set_event_loop(self._loop)

            async def open_server():
                # Keepalive pings from the server every 10 s, as Slack sends them; a missing
                # pong never closes the connection here: noticing a stale one is the client's job.
                self._ws_server = await serve(self._serve_socket, self.host, self._ws_port,
                                              ping_interval=10, ping_timeout=None, close_timeout=2)
                self._ws_port = self._ws_server.sockets[0].getsockname()[1]

            self._loop.run_until_complete(open_server())
            started.set()
            self._loop.run_forever()

        self._ws_thread = threading.Thread(target=run_loop, name="slack-standin-ws", daemon=True)
        self._ws_thread.start()
        if not started.wait(10):
            raise RuntimeError("the WebSocket server did not start")
        self._http_thread = threading.Thread(target=self.httpd.serve_forever, name="slack-standin-http", daemon=True)
        self._http_thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

        async def close_all():
            for ws in list(self._live.values()):
                ws.transport.abort()
            self._ws_server.close()
            await self._ws_server.wait_closed()

        if self._ws_server is not None:
            asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._ws_thread:
            self._ws_thread.join(10)

    def __enter__(self) -> "SlackStandin":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ recording

    def _record(self, kind: str, where: list, record: dict[str, Any]) -> None:
        with self._cond:
            where.append(record)
            self._cond.notify_all()
        if self.on_event:
            self.on_event(kind, record)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "the condition") -> Any:
        """Wait until `predicate()` is truthy (evaluated under the stand-in's lock); return it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = predicate()
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the Slack stand-in saw no {what} within {timeout} s")
                self._cond.wait(min(left, 0.2))

    def calls_of(self, method: str) -> list[dict[str, Any]]:
        with self._cond:
            return [c for c in self.calls if c["method"] == method]

    def wait_call(self, method: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The first `count` calls of `method`, once that many arrived."""
        return self.wait_for(lambda: (found := [c for c in self.calls if c["method"] == method])[count - 1:]
                             and found[:count], timeout, f"{count} call(s) of {method}")

    def wait_response(self, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        return self.wait_for(lambda: self.responses[count - 1:] and self.responses[:count], timeout,
                             f"{count} response_url post(s)")

    def wait_ack(self, envelope_id: str, timeout: float = 10.0) -> float:
        """Seconds from the push of the envelope to its ack."""
        ack = self.wait_for(lambda: next((a for a in self.acks if a["envelope_id"] == envelope_id), None),
                            timeout, f"ack of {envelope_id}")
        return ack["at"] - self.pushed[envelope_id]["at"]

    def wait_connected(self, count: int = 1, timeout: float = 20.0) -> dict[str, Any]:
        """The `count`-th connection, once it is open and got its hello."""
        return self.wait_for(lambda: len(self.connections) >= count and self.connections[count - 1]["hello_at"]
                             and self.connections[count - 1], timeout, f"connection #{count} with its hello")

    def fail_api(self, method: str, error: str = "internal_error", times: int = 1) -> None:
        """Answer the next `times` calls of `method` with `{"ok": false, "error": error}`."""
        with self._cond:
            self.api_faults.extend([(method, error)] * times)

    # ------------------------------------------------------------ Socket Mode: what a test sends

    @staticmethod
    def block_actions_payload(user: str, action_id: str, check_id: str, channel: str, ts: str,
                              action_ts: str | None = None, response_url: str = "",
                              message: dict[str, Any] | None = None) -> dict[str, Any]:
        """A `block_actions` payload for a click on a button of an alert message."""
        return {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower()},
            "container": {"type": "message", "channel_id": channel, "message_ts": ts},
            "channel": {"id": channel},
            "message": {"ts": ts, **(message or {})},
            "response_url": response_url,
            "actions": [{"action_id": action_id, "block_id": f"loyalty/{check_id}", "value": check_id,
                         "type": "button", "action_ts": action_ts or f"{time.time():.6f}"}],
        }

    def block_action(self, user: str, action_id: str, check_id: str, channel: str, ts: str,
                     action_ts: str | None = None, message: dict[str, Any] | None = None,
                     envelope_id: str | None = None) -> dict[str, Any]:
        """Push a click as Slack delivers it; returns the envelope (its `envelope_id`)."""
        response_url = f"{self.url}/response/{uuid.uuid4().hex}"
        payload = self.block_actions_payload(user, action_id, check_id, channel, ts, action_ts, response_url, message)
        return self.push(payload, envelope_id=envelope_id)

    def push(self, payload: dict[str, Any], envelope_id: str | None = None, kind: str = "interactive"
             ) -> dict[str, Any]:
        """Send an envelope on the newest connection (the same `envelope_id` again: a redelivery)."""
        envelope = {"envelope_id": envelope_id or str(uuid.uuid4()), "type": kind,
                    "accepts_response_payload": False, "payload": payload}
        if envelope_id and envelope_id in self.pushed:
            envelope["retry_attempt"], envelope["retry_reason"] = 1, "timeout"
        self.send_frame(envelope, remember=envelope["envelope_id"])
        return envelope

    def find_message(self, check_id: str) -> tuple[str, str] | None:
        """(channel, ts) of the newest message carrying the check's buttons."""
        with self._cond:
            found = [key for key, msg in self.messages.items()
                     if any(b.get("block_id") == f"loyalty/{check_id}" for b in msg.get("blocks") or [])]
        return max(found, key=lambda key: float(key[1] or 0)) if found else None

    def click(self, check_id: str, action_id: str = "loyalty_ack", user: str = "U0DEMO",
              channel: str | None = None, ts: str | None = None) -> dict[str, Any]:
        """A click on a button of the check's newest message (the demo's "click")."""
        if not (channel and ts):
            found = self.find_message(check_id)
            if found is None:
                raise LookupError(f"no message with the buttons of {check_id!r} was posted here")
            channel, ts = found
        return self.block_action(user, action_id, check_id, channel, ts, message=self.messages.get((channel, ts)))

    def page(self) -> str:
        """The posted messages as a page, their buttons clickable (the demo's browser view)."""
        from html import escape

        def text(block):
            t = block.get("text")
            return escape(t.get("text", "") if isinstance(t, dict) else str(t or ""))

        parts = ["<!doctype html><meta charset=utf-8><title>Slack stand-in</title><meta http-equiv=refresh"
                 " content=10><body style='font-family:sans-serif;max-width:60em;margin:auto'>"
                 "<h1>#alerts (Slack stand-in)</h1>"]
        with self._cond:
            items = sorted(self.messages.items(), key=lambda kv: float(kv[0][1] or 0), reverse=True)
        for (channel, ts), msg in items:
            parts.append(f"<div style='border:1px solid #ccc;border-radius:6px;padding:.5em 1em;margin:1em 0'>"
                         f"<small>{escape(channel)} · ts {escape(ts)}</small>")
            for block in msg.get("blocks") or []:
                kind = block.get("type")
                if kind == "header":
                    parts.append(f"<h3>{text(block)}</h3>")
                elif kind == "section":
                    parts.append(f"<p style='white-space:pre-wrap'>{text(block)}</p>")
                    for field in block.get("fields") or []:
                        parts.append(f"<div style='white-space:pre-wrap'>{escape(field.get('text', ''))}</div>")
                elif kind == "context":
                    parts.append("<p><small>" + " ".join(escape(e.get("text", "")) for e in block.get("elements", []))
                                 + "</small></p>")
                elif kind == "actions":
                    check = (block.get("block_id") or "").removeprefix("loyalty/")
                    for e in block.get("elements") or []:
                        label = escape((e.get("text") or {}).get("text", ""))
                        if e.get("url"):
                            parts.append(f"<a href='{escape(e['url'])}' target=_blank>{label}</a> ")
                            continue
                        parts.append(
                            "<form method=post action='/demo/click' style='display:inline'>"
                            + "".join(f"<input type=hidden name={k} value='{escape(str(v))}'>" for k, v in
                                      (("check", check), ("action_id", e.get("action_id", "")),
                                       ("channel", channel), ("ts", ts)))
                            + f"<button>{label}</button></form> ")
            parts.append("</div>")
        if not items:
            parts.append("<p>No message yet: alerts appear here when the DAGs post them.</p>")
        parts.append("<h2>Ephemeral replies</h2><ul>")
        with self._cond:
            parts += [f"<li>{escape(str(r['body'].get('text', '')))}</li>" for r in self.responses[-10:]]
        parts.append("</ul>")
        return "".join(parts)

    def disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask the client to reconnect, as Slack does before it recycles a connection."""
        self.send_frame({"type": "disconnect", "reason": reason, "debug_info": {"host": "standin"}})

    def drop(self) -> None:
        """Cut the newest connection without a close frame (the TCP connection is reset)."""
        self._on_newest(lambda ws: ws.transport.abort())

    def freeze(self) -> None:
        """The newest connection goes stale: nothing is read any more (no pong to a ping, no
        ack arrives) and nothing is sent, while the TCP connection stays open."""
        def freeze(ws):
            ws.transport.pause_reading()
            self.connections[-1]["frozen"] = True
        self._on_newest(freeze)

    def send_frame(self, message: dict[str, Any], remember: str | None = None) -> None:
        async def send():
            conn_id, ws = self._newest()
            at = time.time()
            if remember:
                self.pushed[remember] = {"envelope": message, "at": at, "connection": conn_id}
            await ws.send(json.dumps(message))
        asyncio.run_coroutine_threadsafe(send(), self._loop).result(10)

    def _newest(self) -> tuple[int, ServerConnection]:
        with self._cond:
            live = [(i, ws) for i, ws in self._live.items() if not self.connections[i]["frozen"]]
        if not live:
            raise RuntimeError("no open Socket Mode connection")
        return live[-1]

    def _on_newest(self, action: Callable[[ServerConnection], None]) -> None:
        async def run():
            action(self._newest()[1])
        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    # ------------------------------------------------------------ Socket Mode: the server side

    async def _serve_socket(self, ws: ServerConnection) -> None:
        with self._cond:
            conn_id = len(self.connections)
            self.connections.append({"id": conn_id, "opened_at": time.time(), "hello_at": None, "closed_at": None,
                                     "frozen": False, "path": ws.request.path if ws.request else None})
            self._live[conn_id] = ws
        try:
            await ws.send(json.dumps({"type": "hello", "num_connections": len(self._live),
                                      "debug_info": {"host": "standin", "approximate_connection_time": 18060},
                                      "connection_info": {"app_id": "A0STANDIN"}}))
            with self._cond:
                self.connections[conn_id]["hello_at"] = time.time()
                self._cond.notify_all()
            if self.on_event:
                self.on_event("connected", self.connections[conn_id])
            async for text in ws:
                at = time.time()
                self._record("frame", self.received, {"text": text, "at": at, "connection": conn_id})
                try:
                    message = json.loads(text)
                except ValueError:
                    continue
                if isinstance(message, dict) and message.get("envelope_id"):
                    self._record("ack", self.acks, {"envelope_id": message["envelope_id"], "at": at,
                                                    "connection": conn_id, "payload": message.get("payload")})
        except Exception:  # noqa: BLE001, S110 - a dropped or reset connection ends here like a closed one
            pass
        finally:
            with self._cond:
                self._live.pop(conn_id, None)
                self.connections[conn_id]["closed_at"] = time.time()
                self._cond.notify_all()
            if self.on_event:
                self.on_event("closed", self.connections[conn_id])

    # ------------------------------------------------------------ Web API

    def _api(self, method: str, token: str | None, args: dict[str, Any]) -> dict[str, Any]:
        self._record("call", self.calls, {"method": method, "token": token, "args": args, "at": time.time()})
        with self._cond:
            fault = next((i for i, (m, _e) in enumerate(self.api_faults) if m == method), None)
            if fault is not None:
                return {"ok": False, "error": self.api_faults.pop(fault)[1]}
        if not token:
            return {"ok": False, "error": "not_authed"}
        wanted = "xapp-" if method == "apps.connections.open" else "xoxb-"
        if method in (*BOT_METHODS, "apps.connections.open") and not token.startswith(wanted):
            return {"ok": False, "error": "not_allowed_token_type"}
        if method == "apps.connections.open":
            return {"ok": True, "url": f"{self.ws_url}?ticket={uuid.uuid4().hex}"}
        if method == "chat.postMessage":
            channel = args.get("channel") or ""
            ts = f"{int(time.time())}.{next(self._ts):06d}"
            with self._cond:
                self.messages[(channel, ts)] = {k: args.get(k) for k in ("text", "blocks") if k in args}
            return {"ok": True, "channel": channel, "ts": ts, "message": {"ts": ts, **self.messages[(channel, ts)]}}
        if method == "chat.update":
            channel, ts = args.get("channel") or "", args.get("ts") or ""
            with self._cond:
                if (channel, ts) not in self.messages and not channel:
                    return {"ok": False, "error": "channel_not_found"}
                self.messages[(channel, ts)] = {k: args.get(k) for k in ("text", "blocks") if k in args}
            return {"ok": True, "channel": channel, "ts": ts, "text": args.get("text")}
        if method == "usergroups.users.list":
            group = args.get("usergroup")
            if group not in self.usergroups:
                return {"ok": False, "error": "no_such_subteam"}
            return {"ok": True, "users": self.usergroups[group]}
        if method in ("auth.test", "api.test"):
            return {"ok": True, "team_id": "T0STANDIN", "user_id": "U0BOT", "bot_id": "B0BOT"}
        return {"ok": False, "error": "unknown_method"}

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def _args(self) -> dict[str, Any]:
                args: dict[str, Any] = dict(parse_qsl(urlsplit(self.path).query))
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                kind = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                if kind == "application/json" and raw:
                    args.update(json.loads(raw))
                elif raw:
                    form = dict(parse_qsl(raw.decode("utf-8")))
                    for key in ("blocks", "attachments"):  # the Web API takes them JSON-encoded in forms
                        if isinstance(form.get(key), str):
                            try:
                                form[key] = json.loads(form[key])
                            except ValueError:
                                pass
                    args.update(form)
                return args

            def _token(self, args: dict[str, Any]) -> str | None:
                auth = self.headers.get("Authorization") or ""
                return auth.removeprefix("Bearer ").strip() or args.pop("token", None)

            def _handle(self):
                path = urlsplit(self.path).path
                args = self._args()
                if path.startswith("/api/"):
                    self._reply(200, standin._api(path.removeprefix("/api/"), self._token(args), args))
                elif path.startswith("/response/"):
                    standin._record("response", standin.responses, {"path": path, "body": args, "at": time.time()})
                    self._reply(200, "ok")
                elif path == "/demo" and self.command == "GET":
                    self._reply(200, standin.page(), "text/html; charset=utf-8")
                elif path == "/demo/click" and self.command == "POST":
                    try:
                        envelope = standin.click(args.get("check") or "", args.get("action_id") or "loyalty_ack",
                                                 args.get("user") or "U0DEMO", args.get("channel"), args.get("ts"))
                    except (LookupError, RuntimeError) as exc:
                        self._reply(409, {"ok": False, "error": str(exc)})
                        return
                    if "json" in (self.headers.get("Content-Type") or ""):
                        self._reply(200, {"ok": True, "envelope_id": envelope["envelope_id"]})
                    else:  # the page's form: back to the page
                        self.send_response(303)
                        self.send_header("Location", "/demo")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                elif path.rstrip("/") == "" and self.command == "GET":
                    self._reply(200, {"connections": len(standin._live), "calls": len(standin.calls)})
                else:
                    self._reply(404, {"ok": False, "error": "not_found"})

            do_GET = do_POST = _handle  # noqa: N815 - http.server API

            def _reply(self, status: int, body: Any, content_type: str | None = None):
                reply(self, status, body, content_type=content_type)

            def log_message(self, *args):  # keep test and demo output clean
                pass

        return Handler


def describe(kind: str, record: dict[str, Any]) -> str:
    """One line for a stand-in event (the demo prints them)."""
    if kind == "call":
        args = record["args"]
        what = {k: args[k] for k in ("channel", "ts", "usergroup", "text") if k in args}
        return f"slack api  {record['method']} {json.dumps(what)[:160]}"
    if kind == "response":
        return f"slack reply (ephemeral) {record['body'].get('text', '')[:160]}"
    if kind == "ack":
        return f"slack ack  envelope {record['envelope_id']}"
    if kind in ("connected", "closed"):
        return f"slack socket #{record['id']} {kind}"
    return f"slack {kind}"


def click_command(argv: list[str]) -> int:
    """`python -m demo.slack_standin click CHECK`: click a button of the check's newest message."""
    import urllib.error
    import urllib.request

    parser = argparse.ArgumentParser(prog="python -m demo.slack_standin click",
                                     description="Click a button of a check's newest alert message in the stand-in.")
    parser.add_argument("check", help="the check id, e.g. expiration_task_stale")
    parser.add_argument("--action", default="loyalty_ack",
                        help="loyalty_ack, loyalty_silence_1h, loyalty_silence_4h or loyalty_silence_24h")
    parser.add_argument("--user", default="U0DEMO", help="the clicking Slack user id")
    parser.add_argument("--url", default="http://127.0.0.1:8026", help="the stand-in")
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://", "https://")):
        parser.error("--url must be http(s)://")
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
        f"{args.url}/demo/click", method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"check": args.check, "action_id": args.action, "user": args.user}).encode())
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - http(s) only
            print(answer.read().decode())
    except urllib.error.HTTPError as exc:
        print(exc.read().decode(), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["click"]:
        return click_command(argv[1:])
    parser = argparse.ArgumentParser(description="A local stand-in for Slack's Web API and Socket Mode"
                                                 " (`click CHECK` clicks a button of a running one).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8026, help="HTTP port (the Web API under /api/)")
    parser.add_argument("--ws-port", type=int, default=0, help="WebSocket port (default: any free one)")
    parser.add_argument("--usergroup", action="append", default=[], metavar="S…=U…,U…",
                        help="a user group and its members (usergroups.users.list)")
    args = parser.parse_args(argv)
    groups = {}
    for item in args.usergroup:
        name, _, members = item.partition("=")
        groups[name] = [m for m in members.split(",") if m]
    standin = SlackStandin(args.host, args.port, args.ws_port, groups,
                           on_event=lambda kind, rec: kind != "frame" and print(describe(kind, rec), flush=True))
    standin.start()
    print(f"Slack stand-in: Web API {standin.api_url}, Socket Mode {standin.ws_url}, messages {standin.url}/demo",
          flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
