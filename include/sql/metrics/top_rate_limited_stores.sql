-- Digest metric top_rate_limited_stores: the 5 stores with the most HTTP 429 responses
-- in (T - window, T], most first (ties by name).
--   label store name, value 429 responses
-- Reads: rate_limit_events_occurred_at_idx (index-only).
WITH per_store AS (
    SELECT ev.store_id, count(*) AS responses
    FROM rate_limit_events AS ev
    WHERE ev.occurred_at > %(t)s::timestamptz - %(window)s
      AND ev.occurred_at <= %(t)s::timestamptz
      AND ev.store_id IS NOT NULL
    GROUP BY ev.store_id
)
SELECT s.name                  AS label,
       p.responses::numeric    AS value
FROM per_store AS p
JOIN stores AS s ON s.id = p.store_id
ORDER BY p.responses DESC, s.name, s.id
LIMIT 5;
