-- Digest metric wallet_adoption: share of the active cards (is_active, not anonymized,
-- enrolled at or before T) holding a wallet pass.
--   rows 'google' (google_object_id set), 'apple' (apple_serial_number set), 'any'
--   (either); value NULL when there is no active card
-- Weekly: scans loyalty_cards.
WITH active_cards AS (
    SELECT c.google_object_id IS NOT NULL    AS has_google,
           c.apple_serial_number IS NOT NULL AS has_apple
    FROM loyalty_cards AS c
    WHERE c.is_active
      AND c.anonymized_at IS NULL
      AND c.enrolled_at <= %(t)s::timestamptz
),
counts AS (
    SELECT count(*)                                         AS cards,
           count(*) FILTER (WHERE has_google)               AS google,
           count(*) FILTER (WHERE has_apple)                AS apple,
           count(*) FILTER (WHERE has_google OR has_apple)  AS any_pass
    FROM active_cards
)
SELECT r.label,
       CASE WHEN counts.cards > 0 THEN r.with_pass::numeric / counts.cards END AS value
FROM counts
CROSS JOIN LATERAL (VALUES (1, 'google', counts.google),
                           (2, 'apple',  counts.apple),
                           (3, 'any',    counts.any_pass)) AS r (position, label, with_pass)
ORDER BY r.position;
