-- Digest metric celery_task_outcomes: runs of loyalty.expire_points and
-- loyalty.sync_wallet_passes per final status, date_done in (T - window, T].
--   label '<task name> <STATUS>', value runs; SUCCESS and FAILURE always listed (0 when
--   none), other statuses when they occur
-- date_done is UTC without time zone: T is compared as UTC wall-clock time.
-- Reads: celery_taskmeta_name_date_done_idx (index-only).
WITH tasks (name) AS (
    VALUES ('loyalty.expire_points'), ('loyalty.sync_wallet_passes')
),
window_runs AS (
    SELECT ct.name, coalesce(ct.status, 'UNKNOWN') AS status
    FROM celery_taskmeta AS ct
    WHERE ct.name IN (SELECT name FROM tasks)
      AND ct.date_done > (%(t)s::timestamptz - %(window)s) AT TIME ZONE 'UTC'
      AND ct.date_done <= %(t)s::timestamptz AT TIME ZONE 'UTC'
),
outcomes AS (
    SELECT name, status, count(*) AS runs
    FROM window_runs
    GROUP BY name, status
    UNION ALL
    -- SUCCESS and FAILURE appear even when zero
    SELECT tasks.name, s.status, 0
    FROM tasks CROSS JOIN (VALUES ('SUCCESS'), ('FAILURE')) AS s (status)
)
SELECT name || ' ' || status   AS label,
       sum(runs)::numeric      AS value
FROM outcomes
GROUP BY name, status
ORDER BY name, status;
