-- Naive low_enrollment: every card of every eligible merchant joined and counted with a
-- filter, so all cards ever enrolled are read (instead of the window's). Same columns and
-- values as p2/low_enrollment.sql.
SELECT m.id                                                               AS entity_id,
       m.name                                                             AS entity_name,
       count(c.id) FILTER (WHERE c.enrolled_at > %(t)s::timestamptz - %(window)s
                             AND c.enrolled_at <= %(t)s::timestamptz)     AS value,
       e.active_programs
FROM (SELECT p.merchant_id, count(*) AS active_programs
      FROM loyalty_programs AS p
      WHERE p.is_active AND p.created_at <= %(t)s::timestamptz - %(window)s
      GROUP BY p.merchant_id) AS e
JOIN merchants AS m ON m.id = e.merchant_id
LEFT JOIN loyalty_cards AS c ON c.merchant_id = m.id
GROUP BY m.id, m.name, e.active_programs
ORDER BY value, entity_id;
