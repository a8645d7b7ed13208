-- store_transactions_drop (P1, a learned baseline): per store, its loyalty transactions
-- (all kinds) in each whole UTC hour of the %(window)s before T's hour: the check's
-- baseline.history and baseline.window (the package binds their sum). The package learns
-- each store's usual level per hour of the week from these counts and judges the last
-- hours (loyalty_checks/baseline.py); a store without a transaction in the span has no row.
--   entity      the store (entity_id = store id, entity_name = store name)
--   hour_start  the hour [hour_start, hour_start + 1 h); hours without a row count 0
--   value       its transactions
--   first_seen  stores.created_at: where the store's history starts (min_history)
-- Reads: loyalty_transactions_created_at_store_idx (index only: the span's transactions),
-- then stores_pkey once per store in the span.
WITH span AS (
    SELECT date_trunc('hour', %(t)s::timestamptz, 'UTC') AS until,
           date_trunc('hour', %(t)s::timestamptz, 'UTC') - %(window)s AS since
),
hourly AS (
    SELECT tx.store_id,
           date_trunc('hour', tx.created_at, 'UTC') AS hour_start,
           count(*) AS transactions
    FROM loyalty_transactions AS tx, span
    WHERE tx.created_at >= span.since
      AND tx.created_at < span.until
      AND tx.store_id IS NOT NULL
    GROUP BY tx.store_id, hour_start
)
SELECT s.id            AS entity_id,
       s.name          AS entity_name,
       h.hour_start,
       h.transactions  AS value,
       s.created_at    AS first_seen
FROM hourly AS h
JOIN stores AS s ON s.id = h.store_id
ORDER BY s.id, h.hour_start;
