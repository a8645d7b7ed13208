-- p0_checks_stale (P1, runs on loyalty_monitoring_db): the dead man’s switch inside
-- Airflow. Minutes from the latest evaluation recorded by a *scheduled* run of the P0
-- DAG (%(dag_id)s) to T. Manual runs and `airflow dags test` do not count, so a test
-- or backfill never makes the P0 DAG look alive, nor stale.
--   value    minutes since that evaluation
--   no data  NULL when no scheduled P0 run ever recorded one (a new installation)
WITH latest_p0 AS (
    SELECT max(evaluated_at) AS evaluated_at
    FROM loyalty_monitoring.evaluations
    WHERE dag_id = %(dag_id)s
      AND run_id LIKE %(run_id_pattern)s
      AND evaluated_at <= %(t)s
)
SELECT extract(epoch FROM %(t)s - evaluated_at) / 60 AS value,
       evaluated_at                                   AS latest_p0_evaluation
FROM latest_p0;
