-- The least-privilege role of the package (run once as an administrator, in the
-- loyalty database; set its password separately: \password loyalty_checks).
--   * SELECT on the source tables the checks read, nothing else there;
--   * owner of the schema loyalty_monitoring, where it keeps its own state.
-- The checks also run every query in a READ ONLY transaction with a statement timeout.
-- When loyalty_monitoring_db is another database, run the last block there instead.

CREATE ROLE loyalty_checks LOGIN;
ALTER ROLE loyalty_checks SET statement_timeout = '5min';   -- a safety net above the catalog's
ALTER ROLE loyalty_checks SET idle_in_transaction_session_timeout = '1min';

GRANT CONNECT ON DATABASE loyalty TO loyalty_checks;
GRANT USAGE ON SCHEMA public TO loyalty_checks;
GRANT SELECT ON merchants, stores, email_logs, celery_taskmeta, rate_limit_events, loyalty_programs,
                loyalty_cards, loyalty_transactions, loyalty_wallet_sync_runs
    TO loyalty_checks;

-- The package's own state (created here so the role needs no CREATE on the database).
CREATE SCHEMA IF NOT EXISTS loyalty_monitoring AUTHORIZATION loyalty_checks;
