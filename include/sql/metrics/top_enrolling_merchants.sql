-- Digest metric top_enrolling_merchants: the 5 merchants with the most cards enrolled
-- in (T - window, T], most first (ties by name).
--   label merchant name, value cards enrolled
-- Reads: loyalty_cards_enrolled_at_idx.
WITH window_enrollments AS (
    SELECT c.merchant_id, count(*) AS enrolled
    FROM loyalty_cards AS c
    WHERE c.enrolled_at > %(t)s::timestamptz - %(window)s
      AND c.enrolled_at <= %(t)s::timestamptz
    GROUP BY c.merchant_id
)
SELECT m.name                AS label,
       w.enrolled::numeric   AS value
FROM window_enrollments AS w
JOIN merchants AS m ON m.id = w.merchant_id
ORDER BY w.enrolled DESC, m.name, m.id
LIMIT 5;
