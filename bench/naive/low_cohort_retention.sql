-- Naive low_cohort_retention: months compared as formatted text ('YYYY-MM' of each
-- card's enrolment and of each transaction), so every card and every transaction is
-- read and formatted. Same columns and values as p2/low_cohort_retention.sql.
WITH months AS (
    SELECT to_char(date_trunc('month', %(t)s::timestamptz AT TIME ZONE 'UTC') - interval '4 months', 'YYYY-MM') AS cohort_month,
           to_char(date_trunc('month', %(t)s::timestamptz AT TIME ZONE 'UTC') - interval '1 month', 'YYYY-MM')  AS activity_month
),
cohort AS (
    SELECT c.id
    FROM loyalty_cards AS c, months
    WHERE to_char(c.enrolled_at AT TIME ZONE 'UTC', 'YYYY-MM') = months.cohort_month
),
active AS (
    SELECT DISTINCT tx.card_id
    FROM loyalty_transactions AS tx, months
    WHERE tx.kind IN ('stamp_add', 'stamp_redeem', 'points_earn', 'points_redeem')
      AND to_char(tx.created_at AT TIME ZONE 'UTC', 'YYYY-MM') = months.activity_month
)
SELECT CASE WHEN count(*) > 0 THEN count(a.card_id)::numeric / count(*) END AS value,
       (SELECT cohort_month FROM months)                                    AS cohort_month,
       (SELECT activity_month FROM months)                                  AS activity_month,
       count(*)                                                             AS cohort_size,
       count(a.card_id)                                                     AS retained
FROM cohort AS co
LEFT JOIN active AS a ON a.card_id = co.id;
