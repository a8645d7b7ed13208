-- Naive high_churn: the same filters written plainly, the two counts as two passes over
-- the cards (the check makes one). Both scan loyalty_cards: a weekly check may.
-- Same columns and values as p2/high_churn.sql.
WITH active_cards AS (
    SELECT c.id, coalesce(c.last_activity_at, c.enrolled_at) AS last_activity
    FROM loyalty_cards AS c
    WHERE c.is_active
      AND c.anonymized_at IS NULL
      AND c.enrolled_at <= %(t)s::timestamptz
      AND %(t)s::timestamptz - coalesce(c.last_activity_at, c.enrolled_at) < %(window)s
      AND %(t)s::timestamptz - coalesce(c.last_activity_at, c.enrolled_at) >= interval '0'
)
SELECT CASE WHEN (SELECT count(*) FROM active_cards) > 0
            THEN (SELECT count(*) FROM active_cards WHERE last_activity <= %(t)s::timestamptz - %(at_risk_after)s)::numeric
                 / (SELECT count(*) FROM active_cards) END                                      AS value,
       (SELECT count(*) FROM active_cards WHERE last_activity <= %(t)s::timestamptz - %(at_risk_after)s) AS at_risk_cards,
       (SELECT count(*) FROM active_cards)                                                      AS active_cards;
