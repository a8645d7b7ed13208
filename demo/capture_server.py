"""A local stand-in for Slack incoming webhooks, Slack's Web API, the PagerDuty Events API v2 and a heartbeat.

Accepts POSTs (and heartbeat GETs) on any path, keeps them (in memory and, optionally, as JSON lines
in a file) and answers like the real services: Slack webhooks `200 ok`; Slack's Web API under
`/api/` (a connection's base_url `{url}/api/`): `chat.postMessage` and `chat.update` answer
`{"ok": true, "channel", "ts"}` (a new unique ts for a post, the message's own for an update);
PagerDuty `/v2/enqueue` `202 {"status": "success", "dedup_key": ...}`. JSON, form and multipart
bodies are kept parsed. Used by the demo, the docker-compose stack
(`python -m demo.capture_server --port 8025`) and the tests.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

SLACK_API = "/api/"  # Slack's Web API methods: {base_url}chat.postMessage
SLACK_JSON_FIELDS = ("blocks", "attachments", "metadata")  # sent as JSON text in form bodies


def parse_body(raw: bytes, content_type: str | None) -> Any:
    """A request body as the service reads it: JSON, a form (urlencoded or multipart: a dict,
    Slack's JSON fields decoded) or, failing those, text."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    elif kind == "multipart/form-data":
        message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
        form = {part.get_param("name", header="content-disposition"): part.get_content()
                for part in message.iter_parts()}
        form = {k: v.decode("utf-8", "replace") if isinstance(v, bytes) else v for k, v in form.items()}
    else:
        try:
            return json.loads(raw or b"null")
        except ValueError:
            return raw.decode("utf-8", "replace")
    for key in SLACK_JSON_FIELDS:
        try:
            form[key] = json.loads(form[key])
        except (KeyError, ValueError):
            pass
    return form



def reply(handler, status: int, body: Any, headers: dict[str, str] | None = None,
          content_type: str | None = None) -> None:
    """Answer a request of an http.server handler: text as text/plain, anything else as JSON."""
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    handler.send_response(status)
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.send_header("Content-Type", content_type or ("text/plain" if isinstance(body, str) else "application/json"))
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)

class CaptureServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, log_file: str | Path | None = None,
                 on_record=None):
        self.requests: list[dict[str, Any]] = []   # delivered requests
        self.attempts: list[dict[str, Any]] = []   # every request, with the status it got
        self.faults: list[tuple[str, Any]] = []    # (path prefix, fault) served before normal replies
        self._last_ts = 0                          # the Web API's last message ts, in microseconds
        self.on_record = on_record  # called with each captured request (the UI demo prints them)
        self.log_file = Path(log_file) if log_file else None
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = parse_body(raw, self.headers.get("Content-Type"))
                record = {"path": self.path, "body": body}
                if self.path.startswith(SLACK_API):  # which token called the Web API
                    record["authorization"] = self.headers.get("Authorization")
                fault = server.next_fault(self.path)
                if fault is not None:
                    status, headers, delay, reply = fault
                    server.attempts.append({**record, "status": status, "delay": delay})
                    time.sleep(delay)
                    if status is not None:
                        try:
                            self._reply(status, {"error": "injected fault"} if reply is None else reply, headers)
                        except BrokenPipeError:  # the client gave up waiting, as intended
                            pass
                    return
                if self.path.startswith(SLACK_API):  # kept with the request: the ts a post got
                    record["reply"] = server.slack_api(self.path[len(SLACK_API):].split("?")[0], body)
                server.attempts.append({**record, "status": 200})
                server.record(record)
                if "reply" in record:
                    self._reply(200, record["reply"])
                elif self.path.rstrip("/").endswith("/v2/enqueue"):
                    key = body.get("dedup_key") if isinstance(body, dict) else None
                    self._reply(202, {"status": "success", "message": "Event processed",
                                      "dedup_key": key or uuid.uuid4().hex})
                else:
                    self._reply(200, "ok")

            def do_GET(self):  # noqa: N802 - "/" is the health check; other paths are heartbeats
                if self.path.rstrip("/") == "":
                    self._reply(200, {"requests": len(server.requests)})
                    return
                server.record({"method": "GET", "path": self.path, "body": None})
                self._reply(200, "OK")

            def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None):
                reply(self, status, body, headers)

            def log_message(self, *args):  # keep test and demo output clean
                pass

        return Handler

    def record(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(record)
            if self.log_file:
                with self.log_file.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
        if self.on_record:
            self.on_record(record)

    def fail(self, path_prefix: str, status: int | None, times: int = 1, headers: dict[str, str] | None = None,
             delay: float = 0.0, body: Any = None) -> None:
        """Answer the next `times` requests under `path_prefix` with `status` (after `delay`
        seconds) and `body` (default {"error": "injected fault"}); status None answers nothing
        at all (the client times out). Slack's Web API errors are a 200 with
        `body={"ok": False, "error": "channel_not_found"}`, its rate limit a 429 with
        `headers={"Retry-After": "1"}, body={"ok": False, "error": "ratelimited"}`."""
        with self._lock:
            self.faults.extend([(path_prefix, (status, headers or {}, delay, body))] * times)

    def slack_api(self, method: str, body: Any) -> dict[str, Any]:
        """The Web API's answer to one call (the token and the channel are required, as Slack does)."""
        args = body if isinstance(body, dict) else {}
        if method not in ("chat.postMessage", "chat.update"):
            return {"ok": False, "error": "unknown_method"}
        if not args.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        if not (args.get("text") or args.get("blocks") or args.get("attachments")):
            return {"ok": False, "error": "no_text"}
        if method == "chat.update":
            if not args.get("ts"):
                return {"ok": False, "error": "message_not_found"}
            return {"ok": True, "channel": args["channel"], "ts": args["ts"]}
        with self._lock:  # Slack's ts: seconds.microseconds, unique per channel
            self._last_ts = max(time.time_ns() // 1000, self._last_ts + 1)
            ts = f"{self._last_ts // 1_000_000}.{self._last_ts % 1_000_000:06d}"
        return {"ok": True, "channel": args["channel"], "ts": ts}

    def next_fault(self, path: str):
        with self._lock:
            for i, (prefix, _fault) in enumerate(self.faults):
                if path.startswith(prefix):
                    return self.faults.pop(i)[1]
        return None

    def take(self, path_prefix: str = "") -> list[dict[str, Any]]:
        """Remove and return the captured requests whose path starts with `path_prefix`."""
        with self._lock:
            taken = [r for r in self.requests if r["path"].startswith(path_prefix)]
            self.requests = [r for r in self.requests if not r["path"].startswith(path_prefix)]
        return taken

    def start(self) -> "CaptureServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--log-file", default=None)
    args = parser.parse_args()
    server = CaptureServer(args.host, args.port, args.log_file)
    print(f"capturing notifications on {server.url}", flush=True)
    server.httpd.serve_forever()


if __name__ == "__main__":
    main()
