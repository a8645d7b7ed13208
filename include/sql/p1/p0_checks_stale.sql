-- p0_checks_stale (P1, runs on loyalty_monitoring_db): the dead man’s switch inside
-- Airflow. Minutes from the latest evaluation recorded by a *scheduled* run of the P0
-- DAGs (%(dag_ids)s: loyalty_p0_checks, and its shards loyalty_p0_checks_2 ... when the
-- catalog splits P0) to T; with shards, of the one that ran longest ago. Manual runs and
-- `airflow dags test` do not count, so a test or backfill never makes a P0 DAG look
-- alive, nor stale.
--   value          minutes since that evaluation
--   details        latest_p0_evaluation, stalest_dag
--   no data        NULL when no scheduled P0 run ever recorded one (a new installation);
--                  a shard that never recorded one is not counted (a new shard)
-- Reads: evaluations_dag_time, one backward index scan per DAG.
WITH latest_per_dag AS (
    SELECT d.dag_id,
           (SELECT max(e.evaluated_at)
            FROM loyalty_monitoring.evaluations AS e
            WHERE e.dag_id = d.dag_id
              AND e.run_id LIKE %(run_id_pattern)s
              AND e.evaluated_at <= %(t)s) AS evaluated_at
    FROM unnest(string_to_array(%(dag_ids)s, ',')) AS d (dag_id)
)
SELECT extract(epoch FROM %(t)s - min(evaluated_at)) / 60                 AS value,
       min(evaluated_at)                                                  AS latest_p0_evaluation,
       (array_agg(dag_id ORDER BY evaluated_at) FILTER (WHERE evaluated_at IS NOT NULL))[1] AS stalest_dag
FROM latest_per_dag;
