-- The package's own tables in loyalty_monitoring_db, created on first use
-- (loyalty_checks/store/__init__.py runs this file under an advisory lock; it is idempotent).

-- Only when missing: CREATE SCHEMA needs CREATE on the database even when the schema
-- exists, and the least-privilege role (monitoring_role.sql) only owns the schema.
DO $$
BEGIN
    IF to_regnamespace('loyalty_monitoring') IS NULL THEN
        CREATE SCHEMA loyalty_monitoring;
    END IF;
END $$;

-- Every evaluation of every check: one row per check and evaluation time T.
CREATE TABLE IF NOT EXISTS loyalty_monitoring.evaluations (
    check_id        text             NOT NULL,
    evaluated_at    timestamptz      NOT NULL,          -- T, the run's logical time
    severity        text             NOT NULL,
    dag_id          text             NOT NULL,
    run_id          text             NOT NULL,
    status          text             NOT NULL CHECK (status IN ('ok', 'firing', 'no_data', 'error')),
    alert_status    text             NOT NULL DEFAULT 'ok',  -- ok | pending | firing after this evaluation
    value           double precision,
    threshold       double precision,                     -- NULL for a check with a learned baseline
    comparison      text             NOT NULL,
    entities        jsonb            NOT NULL DEFAULT '[]',  -- every breaching entity, worst first
    entities_total  integer          NOT NULL DEFAULT 0,     -- entities measured
    details         jsonb            NOT NULL DEFAULT '{}',
    error           text,
    silenced        boolean          NOT NULL DEFAULT false, -- a silence of the whole check was active
    silences        jsonb            NOT NULL DEFAULT '[]',  -- the silences active at T
    notifications   jsonb            NOT NULL DEFAULT '[]',  -- what this evaluation decided to send
    recorded_at     timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (check_id, evaluated_at)
);
-- Before baselines (issue 19) every check had a fixed threshold.
ALTER TABLE loyalty_monitoring.evaluations ALTER COLUMN threshold DROP NOT NULL;
-- The P1 watchdog looks up the latest evaluation of the P0 DAG.
CREATE INDEX IF NOT EXISTS evaluations_dag_time ON loyalty_monitoring.evaluations (dag_id, evaluated_at DESC);
-- The console's chart of a check (store/console.py evaluation_buckets): a year of a P0 check is
-- 105,120 rows, read from this index alone (an index-only scan), not from the wide rows.
CREATE INDEX IF NOT EXISTS evaluations_chart ON loyalty_monitoring.evaluations (check_id, evaluated_at)
    INCLUDE (value, alert_status, status);

-- The current alert state of each check (lifecycle.py: alerts per entity, what was told).
CREATE TABLE IF NOT EXISTS loyalty_monitoring.check_state (
    check_id           text        PRIMARY KEY,
    status             text        NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'pending', 'firing')),
    since              timestamptz,                 -- T at which the current status began
    last_evaluated_at  timestamptz,                 -- T of the latest applied evaluation
    last_run_id        text,
    lifecycle          jsonb       NOT NULL DEFAULT '{}',
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Silences: a check, or one entity of it, notifies nobody from starts_at until ends_at.
CREATE TABLE IF NOT EXISTS loyalty_monitoring.silences (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    check_id    text        NOT NULL,
    entity_id   text,                                -- NULL = the whole check
    starts_at   timestamptz NOT NULL DEFAULT now(),
    ends_at     timestamptz NOT NULL CHECK (ends_at > starts_at),
    reason      text        NOT NULL,
    author      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS silences_check_time ON loyalty_monitoring.silences (check_id, ends_at);

-- One row per notification sent: a cleared and re-run task sends nothing twice.
CREATE TABLE IF NOT EXISTS loyalty_monitoring.notifications (
    check_id      text        NOT NULL,
    evaluated_at  timestamptz NOT NULL,
    event         text        NOT NULL,   -- trigger | update | reminder | escalate | resolve | error | error_resolve | digest
    channel       text        NOT NULL,   -- pagerduty | slack
    run_id        text        NOT NULL,
    attempts      integer     NOT NULL DEFAULT 0,
    sent_at       timestamptz,
    last_error    text,
    PRIMARY KEY (check_id, evaluated_at, event, channel)
);

-- Backtests run from the loyalty_backtest DAG (loyalty_checks/backtest_dag.py): the request,
-- the result as spec/backtest.md's JSON, and the PNG plot, for the console to show.
CREATE TABLE IF NOT EXISTS loyalty_monitoring.backtests (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    check_id      text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    requested_by  text,
    request       jsonb       NOT NULL,   -- check, start, end, overrides, sweep
    result        jsonb       NOT NULL,   -- spec/backtest.md: settings, notifications, episodes, summary, ...
    plot          bytea                   -- PNG
);
CREATE INDEX IF NOT EXISTS backtests_check_time ON loyalty_monitoring.backtests (check_id, created_at DESC);

-- What people did to an alert (acknowledge, silence), from Slack or the console: the
-- check's history shows it. `dedup_key` applies a redelivered Slack action once.
CREATE TABLE IF NOT EXISTS loyalty_monitoring.actions (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    check_id    text        NOT NULL,
    action      text        NOT NULL,   -- ack | silence_1h | silence_4h | silence_24h | silence
    actor       text        NOT NULL,   -- slack:<user id> or the console user
    source      text        NOT NULL CHECK (source IN ('slack', 'console')),
    at          timestamptz NOT NULL DEFAULT now(),
    detail      jsonb       NOT NULL DEFAULT '{}',
    dedup_key   text        UNIQUE
);
CREATE INDEX IF NOT EXISTS actions_check_time ON loyalty_monitoring.actions (check_id, at DESC);

-- The Slack messages of each check posted through the Web API: actions update them in place.
CREATE TABLE IF NOT EXISTS loyalty_monitoring.slack_messages (
    channel_id    text        NOT NULL,
    ts            text        NOT NULL,
    check_id      text        NOT NULL,
    evaluated_at  timestamptz NOT NULL,
    event         text        NOT NULL,
    body          jsonb       NOT NULL,   -- what was posted (chat.update rewrites it)
    posted_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, ts)
);
CREATE INDEX IF NOT EXISTS slack_messages_check ON loyalty_monitoring.slack_messages (check_id, posted_at DESC);

-- Long-running components outside Airflow (the Slack actions listener) say they are alive.
CREATE TABLE IF NOT EXISTS loyalty_monitoring.heartbeats (
    component  text        PRIMARY KEY,
    beat_at    timestamptz NOT NULL,
    detail     jsonb       NOT NULL DEFAULT '{}'
);
