-- Digest metric stamp_completion_rate: share of the cards of stamp programs enrolled
-- at or before T that have at least one stamp_redeem at or before T.
--   one row: label 'stamp completion rate', value the share (NULL when there is no
--   stamp-program card)
-- Weekly: scans the stamp programs’ cards; probes loyalty_transactions_card_created_at_idx.
WITH stamp_cards AS (
    SELECT c.id,
           EXISTS (
               SELECT 1
               FROM loyalty_transactions AS tx
               WHERE tx.card_id = c.id
                 AND tx.kind = 'stamp_redeem'
                 AND tx.created_at <= %(t)s::timestamptz
           ) AS completed
    FROM loyalty_cards AS c
    JOIN loyalty_programs AS p ON p.id = c.program_id
    WHERE p.program_type = 'stamps'
      AND c.enrolled_at <= %(t)s::timestamptz
),
counts AS (
    SELECT count(*) AS cards, count(*) FILTER (WHERE completed) AS completed
    FROM stamp_cards
)
SELECT 'stamp completion rate'::text                                  AS label,
       CASE WHEN cards > 0 THEN completed::numeric / cards END      AS value
FROM counts;
