-- Naive expiration_task_stale: the obvious query. T is compared on the column side
-- (date_done converted to timestamptz, row by row), so no index range can be used on
-- date_done: every run of the task is read, and the failures are counted by a correlated
-- subquery over the task's rows. Same columns and values as p0/expiration_task_stale.sql.
WITH last_success AS (
    SELECT max(ct.date_done AT TIME ZONE 'UTC') AS done_at
    FROM celery_taskmeta AS ct
    WHERE ct.name = %(task_name)s
      AND ct.status = 'SUCCESS'
      AND ct.date_done AT TIME ZONE 'UTC' <= %(t)s::timestamptz
)
SELECT extract(epoch FROM %(t)s::timestamptz - ls.done_at) / 3600 AS value,
       ls.done_at                                                      AS last_success,
       (SELECT count(*)
        FROM celery_taskmeta AS f
        WHERE f.name = %(task_name)s
          AND f.status = 'FAILURE'
          AND f.date_done AT TIME ZONE 'UTC' <= %(t)s::timestamptz
          AND f.date_done AT TIME ZONE 'UTC' > coalesce(ls.done_at, '-infinity'))  AS failures_since_last_success
FROM last_success AS ls;
