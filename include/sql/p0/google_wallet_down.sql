-- google_wallet_down (P0): the lower failure ratio (cards_failed / cards_total) of the
-- latest `runs` (2) wallet sync runs of `provider` (google) finished at or before T; runs with
-- cards_total = 0 are skipped. Fires only when every one of those runs is over the
-- threshold, hence the lower of the ratios.
--   no data NULL when fewer than `runs` such runs exist (does not fire)
-- Reads: loyalty_wallet_sync_runs_provider_finished_idx (two rows, backwards from T).
WITH latest_runs AS (
    SELECT r.id,
           r.finished_at,
           r.cards_total,
           r.cards_failed,
           r.cards_failed::numeric / r.cards_total AS failure_ratio
    FROM loyalty_wallet_sync_runs AS r
    WHERE r.provider = %(provider)s
      AND r.cards_total > 0
      AND r.finished_at <= %(t)s::timestamptz
    ORDER BY r.finished_at DESC, r.id DESC
    LIMIT %(runs)s
),
summary AS (
    SELECT count(*)                                                     AS runs_found,
           min(failure_ratio)                                           AS lowest_ratio,
           (array_agg(failure_ratio ORDER BY finished_at DESC, id DESC))[1] AS latest_failure_ratio,
           max(finished_at)                                             AS latest_finished_at,
           sum(cards_failed)                                            AS cards_failed,
           sum(cards_total)                                             AS cards_total
    FROM latest_runs
)
SELECT CASE WHEN runs_found >= %(runs)s THEN lowest_ratio END AS value,
       round(latest_failure_ratio, 4)                                AS latest_failure_ratio,
       latest_finished_at,
       runs_found,
       cards_failed,
       cards_total
FROM summary;
