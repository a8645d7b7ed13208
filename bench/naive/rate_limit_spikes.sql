-- Naive rate_limit_spikes: the window written as an age (T - occurred_at < window) and
-- the minute taken from a formatted timestamp, so every 429 ever logged is read and
-- formatted. Same columns and values as p1/rate_limit_spikes.sql.
WITH per_minute AS (
    SELECT ev.store_id,
           to_char(ev.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') AS minute_text,
           count(*)                                                        AS events
    FROM rate_limit_events AS ev
    WHERE %(t)s::timestamptz - ev.occurred_at < %(window)s
      AND %(t)s::timestamptz - ev.occurred_at >= interval '0'
      AND ev.store_id IS NOT NULL
    GROUP BY ev.store_id, minute_text
),
ranked AS (
    SELECT pm.*,
           row_number() OVER (PARTITION BY pm.store_id ORDER BY pm.events DESC, pm.minute_text DESC) AS rn,
           sum(pm.events) OVER (PARTITION BY pm.store_id)                                          AS events_in_window
    FROM per_minute AS pm
)
SELECT s.id                                                            AS entity_id,
       s.name                                                          AS entity_name,
       r.events                                                        AS value,
       m.name                                                          AS merchant_name,
       to_timestamp(r.minute_text, 'YYYY-MM-DD HH24:MI') AT TIME ZONE current_setting('TimeZone') AT TIME ZONE 'UTC'
                                                                       AS minute,
       r.events_in_window
FROM ranked AS r
JOIN stores    AS s ON s.id = r.store_id
JOIN merchants AS m ON m.id = s.merchant_id
WHERE r.rn = 1
ORDER BY value DESC, entity_id;
