-- low_enrollment (P2): per merchant with an active program created at or before
-- T - window, the number of its cards enrolled in (T - window, T] (0 included).
--   entity  the merchant (entity_id = merchant id, entity_name = merchant name)
--   no data no such merchant (no row)
-- Reads: loyalty_programs (small) and loyalty_cards_enrolled_at_idx (the window’s cards).
WITH eligible_merchants AS (
    SELECT p.merchant_id,
           count(*) AS active_programs
    FROM loyalty_programs AS p
    WHERE p.is_active
      AND p.created_at <= %(t)s::timestamptz - %(window)s
    GROUP BY p.merchant_id
),
window_enrollments AS (
    SELECT c.merchant_id, count(*) AS enrolled
    FROM loyalty_cards AS c
    WHERE c.enrolled_at > %(t)s::timestamptz - %(window)s
      AND c.enrolled_at <= %(t)s::timestamptz
    GROUP BY c.merchant_id
)
SELECT m.id                        AS entity_id,
       m.name                      AS entity_name,
       coalesce(w.enrolled, 0)     AS value,
       e.active_programs
FROM eligible_merchants AS e
JOIN merchants AS m ON m.id = e.merchant_id
LEFT JOIN window_enrollments AS w ON w.merchant_id = e.merchant_id
ORDER BY value, entity_id;
