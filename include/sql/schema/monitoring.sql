-- The package's own tables in loyalty_monitoring_db, created on first use
-- (loyalty_checks/state.py runs this file under an advisory lock; it is idempotent).

CREATE SCHEMA IF NOT EXISTS loyalty_monitoring;

-- Every evaluation of every check: one row per check and evaluation time T.
CREATE TABLE IF NOT EXISTS loyalty_monitoring.evaluations (
    check_id        text             NOT NULL,
    evaluated_at    timestamptz      NOT NULL,          -- T, the run's logical time
    severity        text             NOT NULL,
    dag_id          text             NOT NULL,
    run_id          text             NOT NULL,
    status          text             NOT NULL CHECK (status IN ('ok', 'firing', 'no_data', 'error')),
    value           double precision,
    threshold       double precision NOT NULL,
    comparison      text             NOT NULL,
    entities        jsonb            NOT NULL DEFAULT '[]',  -- every breaching entity, worst first
    entities_total  integer          NOT NULL DEFAULT 0,     -- entities measured
    details         jsonb            NOT NULL DEFAULT '{}',
    error           text,
    events          text[]           NOT NULL DEFAULT '{}',  -- notifications this evaluation decided
    firing_since    timestamptz,     -- T the alert started firing (while firing, and on its resolve)
    recorded_at     timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (check_id, evaluated_at)
);

-- The current alert state of each check: what the next evaluation is compared with.
CREATE TABLE IF NOT EXISTS loyalty_monitoring.check_state (
    check_id           text        PRIMARY KEY,
    status             text        NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'firing')),
    since              timestamptz,                 -- T at which the current status began
    last_evaluated_at  timestamptz,                 -- T of the latest applied evaluation
    last_run_id        text,
    error_since        timestamptz,                 -- set while the check cannot be evaluated
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- One row per notification decided: makes a cleared and re-run task send nothing twice.
CREATE TABLE IF NOT EXISTS loyalty_monitoring.notifications (
    check_id      text        NOT NULL,
    evaluated_at  timestamptz NOT NULL,
    event         text        NOT NULL,   -- trigger | resolve | error | error_resolve | digest
    channel       text        NOT NULL,   -- pagerduty | slack
    run_id        text        NOT NULL,
    attempts      integer     NOT NULL DEFAULT 0,
    sent_at       timestamptz,
    last_error    text,
    PRIMARY KEY (check_id, evaluated_at, event, channel)
);
