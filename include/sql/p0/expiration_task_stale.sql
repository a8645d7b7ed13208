-- expiration_task_stale (P0): hours since the latest successful loyalty.expire_points
-- (the task_name parameter), as of T.
--   value   hours from the latest celery_taskmeta.date_done with status SUCCESS and
--           date_done <= T, to T
--   no data NULL when the task never succeeded up to T (the catalog’s no_data: fire)
-- celery_taskmeta.date_done is `timestamp without time zone` holding UTC: T is compared
-- as UTC wall-clock time. Reads: celery_taskmeta_success_name_date_done_idx (one probe)
-- and celery_taskmeta_name_date_done_idx (failures since then).
WITH as_of AS (
    SELECT %(t)s::timestamptz AT TIME ZONE 'UTC' AS t_utc
),
last_success AS (
    SELECT max(ct.date_done) AS date_done
    FROM celery_taskmeta AS ct
    WHERE ct.name = %(task_name)s
      AND ct.status = 'SUCCESS'
      AND ct.date_done <= (SELECT t_utc FROM as_of)
),
failures_since AS (
    -- FAILURE runs after the last success (all of them up to T if it never succeeded)
    SELECT count(*) AS failures
    FROM celery_taskmeta AS ct
    WHERE ct.name = %(task_name)s
      AND ct.status = 'FAILURE'
      AND ct.date_done <= (SELECT t_utc FROM as_of)
      AND ct.date_done > coalesce((SELECT date_done FROM last_success), '-infinity')
)
SELECT
    extract(epoch FROM (SELECT t_utc FROM as_of) - ls.date_done) / 3600 AS value,
    ls.date_done AT TIME ZONE 'UTC'                                                       AS last_success,
    fs.failures                                                                           AS failures_since_last_success
FROM last_success AS ls
CROSS JOIN failures_since AS fs;
