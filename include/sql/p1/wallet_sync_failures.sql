-- wallet_sync_failures (P1): per wallet provider, the share of cards that failed after all
-- retries over the sync runs finished in (T - window, T]:
--   sum(cardinality(failed_card_ids)) / sum(cards_total)
--   entity  the provider (entity_id = entity_name = provider)
--   no data no run finished in the window (no row); providers whose runs synced no card
--           (sum(cards_total) = 0) are left out
-- Reads: loyalty_wallet_sync_runs_finished_idx (the window’s runs).
WITH window_runs AS (
    SELECT r.provider, r.cards_total, r.failed_card_ids
    FROM loyalty_wallet_sync_runs AS r
    WHERE r.finished_at > %(t)s::timestamptz - %(window)s
      AND r.finished_at <= %(t)s::timestamptz
),
per_provider AS (
    SELECT provider,
           count(*)                            AS runs,
           sum(cardinality(failed_card_ids))   AS failed_cards,
           sum(cards_total)                    AS cards_total
    FROM window_runs
    GROUP BY provider
    HAVING sum(cards_total) > 0
),
failed_sample AS (
    -- a few failed card ids per provider, for the on-call engineer to inspect
    SELECT provider,
           array_to_string((array_agg(DISTINCT card_id ORDER BY card_id))[1:10], ', ') AS failed_card_ids_sample
    FROM window_runs
    CROSS JOIN LATERAL unnest(failed_card_ids) AS card_id
    GROUP BY provider
)
SELECT p.provider                                          AS entity_id,
       p.provider                                          AS entity_name,
       p.failed_cards::numeric / p.cards_total           AS value,
       p.failed_cards,
       p.cards_total,
       p.runs,
       f.failed_card_ids_sample
FROM per_provider AS p
LEFT JOIN failed_sample AS f USING (provider)
ORDER BY value DESC, entity_id;
