-- Naive google_wallet_down: number every run of the provider with a window function,
-- then keep the first two. Every run of the provider up to T is read and sorted (the
-- index that stops after two rows is never reached through a LIMIT). Same columns and
-- values as p0/google_wallet_down.sql.
WITH ranked AS (
    SELECT r.id, r.finished_at, r.cards_total, r.cards_failed,
           r.cards_failed::numeric / r.cards_total AS failure_ratio,
           row_number() OVER (ORDER BY r.finished_at DESC, r.id DESC) AS rn
    FROM loyalty_wallet_sync_runs AS r
    WHERE r.provider = %(provider)s
      AND r.cards_total > 0
      AND r.finished_at <= %(t)s::timestamptz
),
summary AS (
    SELECT count(*)                                         AS runs_found,
           min(failure_ratio)                               AS lowest_ratio,
           max(failure_ratio) FILTER (WHERE rn = 1)         AS latest_failure_ratio,
           max(finished_at)                                 AS latest_finished_at,
           sum(cards_failed)                                AS cards_failed,
           sum(cards_total)                                 AS cards_total
    FROM ranked
    WHERE rn <= %(runs)s
)
SELECT CASE WHEN runs_found >= %(runs)s THEN lowest_ratio END AS value,
       round(latest_failure_ratio, 4)                          AS latest_failure_ratio,
       latest_finished_at,
       runs_found,
       cards_failed,
       cards_total
FROM summary;
