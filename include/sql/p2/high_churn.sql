-- high_churn (P2): share of the active cards that are at risk of churning, as of T.
--   active  is_active, not anonymized, enrolled at or before T, and last activity
--           (coalesce(last_activity_at, enrolled_at)) in (T - window, T]
--   at risk active cards whose last activity is at or before T - at_risk_after
--   value   at-risk / active
--   no data NULL when there is no active card (does not fire)
-- is_active, anonymized_at and last_activity_at are the cards’ current state: a card
-- with activity after T drops out of a back-dated run. Weekly: scans loyalty_cards
-- (last_activity_at is deliberately not indexed, see the schema).
WITH active_cards AS (
    SELECT coalesce(c.last_activity_at, c.enrolled_at) AS last_activity
    FROM loyalty_cards AS c
    WHERE c.is_active
      AND c.anonymized_at IS NULL
      AND c.enrolled_at <= %(t)s::timestamptz
      AND coalesce(c.last_activity_at, c.enrolled_at) > %(t)s::timestamptz - %(window)s
      AND coalesce(c.last_activity_at, c.enrolled_at) <= %(t)s::timestamptz
),
counts AS (
    SELECT count(*)                                                                   AS active_cards,
           count(*) FILTER (WHERE last_activity <= %(t)s::timestamptz - %(at_risk_after)s) AS at_risk_cards
    FROM active_cards
)
SELECT CASE WHEN active_cards > 0 THEN at_risk_cards::numeric / active_cards END AS value,
       at_risk_cards,
       active_cards
FROM counts;
