"""The prelude of a probe run in a fresh interpreter: it records every socket and SQLite
connection in `touched`, and makes Airflow's connection and Variable lookups fail (and
recorded). The probe prints `TOUCHED` and the list at its end; a test asserts it is empty."""

import textwrap

NO_IO_PRELUDE = textwrap.dedent("""
    import sys
    touched = []
    def audit(event, args):
        if event in ("socket.connect", "sqlite3.connect", "socket.getaddrinfo"):
            touched.append((event, str(args)[:200]))
    sys.addaudithook(audit)
    from airflow.sdk import BaseHook, Connection, Variable
    def forbid(what):
        def f(*a, **k):
            touched.append((what, str(a)[:200]))
            raise RuntimeError(what + " is not allowed here")
        return f
    Connection.get = forbid("Connection.get")
    Variable.get = forbid("Variable.get")
    BaseHook.get_connection = forbid("BaseHook.get_connection")
""")
