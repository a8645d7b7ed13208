"""A real TCP proxy on 127.0.0.1 that can go silent, for fault injection.

    proxy = TcpProxy(("127.0.0.1", 5432)).start()     # or TcpProxy("/tmp/pg/.s.PGSQL.5432")
    proxy.port                                        # connect here instead of upstream
    proxy.blackhole()     # from now on nothing is forwarded, both ways, on open and new
                          # connections; sockets stay open (a network partition: TCP alive,
                          # nothing comes back); new connections are accepted and never answered
    proxy.heal()          # forward again (new connections; black-holed ones stay dead)
    proxy.blackhole_after(n)   # each new connection goes silent after n bytes from upstream
    proxy.stop()

Modes at start: "pass" (forward) or "blackhole" (silent at connect). Every event is
timestamped (`proxy.events`: (time.time(), what)), `proxy.accepted` counts connections, and
`proxy.went_silent_at` is when the fault started (for fault -> page timings).
"""

from __future__ import annotations

import selectors
import socket
import threading
import time


class TcpProxy:
    def __init__(self, upstream: tuple[str, int] | str, mode: str = "pass", host: str = "127.0.0.1"):
        assert mode in ("pass", "blackhole"), mode
        self.upstream = upstream
        self.mode = mode
        self.after_bytes: int | None = None
        self.events: list[tuple[float, str]] = []
        self.accepted = 0
        self.went_silent_at: float | None = time.time() if mode == "blackhole" else None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns: list[_Pipe] = []
        self._server = socket.create_server((host, 0))
        self._server.settimeout(0.2)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.getsockname()[1]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self, what: str) -> None:
        with self._lock:
            self.events.append((time.time(), what))

    # -------------------------------------------------------- faults

    def blackhole(self) -> None:
        with self._lock:
            self.mode = "blackhole"
            if self.went_silent_at is None:
                self.went_silent_at = time.time()
            for pipe in self._conns:
                pipe.silent = True
        self.log("blackhole")

    def heal(self) -> None:
        with self._lock:
            self.mode = "pass"
            self.went_silent_at = None
        self.log("heal")

    def blackhole_after(self, n_bytes: int) -> None:
        """New connections go silent (both ways) once `n_bytes` came from upstream."""
        self.after_bytes = n_bytes

    # -------------------------------------------------------- plumbing

    def start(self) -> "TcpProxy":
        self._thread = threading.Thread(target=self._accept_loop, name=f"proxy:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self._server.close()
        with self._lock:
            conns = list(self._conns)
        for pipe in conns:
            pipe.close()

    def __enter__(self) -> "TcpProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self.upstream, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.upstream)
            return sock
        return socket.create_connection(self.upstream, timeout=5)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                silent = self.mode == "blackhole"
            self.log(f"accept #{self.accepted}" + (" (black hole)" if silent else ""))
            upstream = None
            if not silent:
                try:
                    upstream = self._connect_upstream()
                except OSError as exc:
                    self.log(f"upstream refused: {exc}")
                    client.close()
                    continue
            pipe = _Pipe(self, client, upstream, silent, self.after_bytes)
            with self._lock:
                self._conns.append(pipe)
            threading.Thread(target=pipe.run, daemon=True).start()


class _Pipe:
    """One proxied connection: forwards both ways until silent, then swallows everything."""

    def __init__(self, proxy: TcpProxy, client: socket.socket, upstream: socket.socket | None, silent: bool,
                 after_bytes: int | None):
        self.proxy, self.client, self.upstream = proxy, client, upstream
        self.silent = silent or upstream is None
        self.after_bytes = after_bytes
        self.downstream_bytes = 0
        self.closed = False

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.client, selectors.EVENT_READ, "client")
        if self.upstream is not None:
            sel.register(self.upstream, selectors.EVENT_READ, "upstream")
        try:
            while not self.closed and not self.proxy._stop.is_set():
                for key, _ in sel.select(timeout=0.2):
                    try:
                        data = key.fileobj.recv(65536)
                    except OSError:
                        data = b""
                    if not data:  # one side closed: close both (a partition would not tell; we are done)
                        if not self.silent:
                            return
                        sel.unregister(key.fileobj)  # silent: keep the other side open and quiet
                        continue
                    if self.silent:
                        continue  # swallowed: nothing gets through any more
                    if key.data == "upstream":
                        if self.after_bytes is not None and self.downstream_bytes + len(data) > self.after_bytes:
                            keep = max(0, self.after_bytes - self.downstream_bytes)
                            if keep:
                                self.client.sendall(data[:keep])
                            self.silent = True
                            self.proxy.log(f"went silent after {self.after_bytes} bytes")
                            if self.proxy.went_silent_at is None:
                                self.proxy.went_silent_at = time.time()
                            continue
                        self.downstream_bytes += len(data)
                        self.client.sendall(data)
                    else:
                        self.upstream.sendall(data)
        except OSError:
            pass
        finally:
            sel.close()
            if not self.silent:
                self.close()

    def close(self) -> None:
        self.closed = True
        for sock in (self.client, self.upstream):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass


def pg_upstream(pg) -> tuple[str, int] | str:
    """Where the test PostgreSQL listens: its Unix socket (embedded server) or host:port."""
    if pg.host.startswith("/"):
        return f"{pg.host}/.s.PGSQL.{pg.port or 5432}"
    return (pg.host, pg.port or 5432)


def pg_conn_via(proxy: TcpProxy, pg, dbname: str, extra: dict | None = None) -> str:
    """An AIRFLOW_CONN_* value (JSON) for a database of `pg`, reached through `proxy`."""
    import json

    conn = {"conn_type": "postgres", "host": "127.0.0.1", "port": proxy.port, "login": pg.user, "schema": dbname}
    if pg.password:
        conn["password"] = pg.password
    if extra:
        conn["extra"] = extra
    return json.dumps(conn)
