-- rate_limit_spikes (P1): per store, the most HTTP 429 responses in any one calendar
-- minute (UTC) among the rate_limit_events of (T - window, T].
--   entity  the store (entity_id = store id, entity_name = store name)
--   details merchant_name, minute (the worst minute, latest on a tie), events_in_window
--   no data no 429 with a store in the window (no row)
-- Reads: rate_limit_events_occurred_at_idx (the window’s events), then stores_pkey and
-- merchants_pkey once per store in the window.
WITH window_events AS (
    SELECT ev.store_id,
           date_trunc('minute', ev.occurred_at, 'UTC') AS minute
    FROM rate_limit_events AS ev
    WHERE ev.occurred_at > %(t)s::timestamptz - %(window)s
      AND ev.occurred_at <= %(t)s::timestamptz
      AND ev.store_id IS NOT NULL
),
per_minute AS (
    SELECT store_id, minute, count(*) AS events
    FROM window_events
    GROUP BY store_id, minute
),
worst_minute AS (
    SELECT DISTINCT ON (store_id) store_id, minute, events
    FROM per_minute
    ORDER BY store_id, events DESC, minute DESC
),
per_store AS (
    SELECT store_id, sum(events) AS events_in_window
    FROM per_minute
    GROUP BY store_id
)
SELECT sm.id             AS entity_id,
       sm.name           AS entity_name,
       w.events          AS value,
       sm.merchant_name,
       w.minute          AS minute,
       p.events_in_window
FROM worst_minute AS w
JOIN per_store AS p USING (store_id)
CROSS JOIN LATERAL (
    -- name and merchant of each store in the window: two primary-key probes per store
    -- (OFFSET 0 keeps them probes; planned as a join, all stores were scanned)
    SELECT s.id, s.name, m.name AS merchant_name
    FROM stores AS s
    JOIN merchants AS m ON m.id = s.merchant_id
    WHERE s.id = w.store_id
    OFFSET 0
) AS sm
ORDER BY value DESC, entity_id;
