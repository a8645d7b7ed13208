-- Naive wallet_sync_failures: the window written as an age (T - finished_at < window),
-- which no index on finished_at can serve: every sync run is read. Same columns and
-- values as p1/wallet_sync_failures.sql.
WITH window_runs AS (
    SELECT r.provider, r.cards_total, r.failed_card_ids
    FROM loyalty_wallet_sync_runs AS r
    WHERE %(t)s::timestamptz - r.finished_at < %(window)s
      AND %(t)s::timestamptz - r.finished_at >= interval '0'
)
SELECT w.provider                                                        AS entity_id,
       w.provider                                                        AS entity_name,
       sum(cardinality(w.failed_card_ids))::numeric / sum(w.cards_total) AS value,
       sum(cardinality(w.failed_card_ids))                               AS failed_cards,
       sum(w.cards_total)                                                AS cards_total,
       count(*)                                                          AS runs,
       (SELECT array_to_string((array_agg(DISTINCT id ORDER BY id))[1:10], ', ')
        FROM window_runs AS x CROSS JOIN LATERAL unnest(x.failed_card_ids) AS id
        WHERE x.provider = w.provider)                                   AS failed_card_ids_sample
FROM window_runs AS w
GROUP BY w.provider
HAVING sum(w.cards_total) > 0
ORDER BY value DESC, entity_id;
