-- low_cohort_retention (P2): month-3 retention of the latest complete monthly cohort.
--   M       the latest UTC calendar month whose month M+3 ended at or before T:
--           date_trunc('month', T in UTC) - 4 months
--   cohort  cards enrolled in [M, M + 1 month)
--   value   share of the cohort with a stamp_add, stamp_redeem, points_earn or
--           points_redeem transaction in [M + 3 months, M + 4 months)
--   no data NULL for an empty cohort (does not fire)
-- Reads: loyalty_cards_enrolled_at_idx (the cohort) and
-- loyalty_transactions_card_created_at_idx (each cohort card’s month M+3).
WITH months AS (
    SELECT (m AT TIME ZONE 'UTC')                                AS cohort_start,
           ((m + interval '1 month') AT TIME ZONE 'UTC')         AS cohort_end,
           ((m + interval '3 months') AT TIME ZONE 'UTC')        AS activity_start,
           ((m + interval '4 months') AT TIME ZONE 'UTC')        AS activity_end,
           to_char(m, 'YYYY-MM')                                 AS cohort_month,
           to_char(m + interval '3 months', 'YYYY-MM')           AS activity_month
    FROM (SELECT date_trunc('month', %(t)s::timestamptz AT TIME ZONE 'UTC') - interval '4 months' AS m) AS cohort
),
cohort_cards AS (
    SELECT c.id,
           EXISTS (
               SELECT 1
               FROM loyalty_transactions AS tx
               WHERE tx.card_id = c.id
                 AND tx.kind IN ('stamp_add', 'stamp_redeem', 'points_earn', 'points_redeem')
                 AND tx.created_at >= months.activity_start
                 AND tx.created_at < months.activity_end
           ) AS retained
    FROM months
    JOIN loyalty_cards AS c
      ON c.enrolled_at >= months.cohort_start
     AND c.enrolled_at < months.cohort_end
),
counts AS (
    SELECT count(*)                        AS cohort_size,
           count(*) FILTER (WHERE retained) AS retained
    FROM cohort_cards
)
SELECT CASE WHEN counts.cohort_size > 0 THEN counts.retained::numeric / counts.cohort_size END AS value,
       months.cohort_month,
       months.activity_month,
       counts.cohort_size,
       counts.retained
FROM counts
CROSS JOIN months;
