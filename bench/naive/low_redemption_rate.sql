-- Naive low_redemption_rate: the window written as an age (T - created_at < window), so
-- all transactions ever made are read. Same columns and values as p2/low_redemption_rate.sql.
WITH totals AS (
    SELECT coalesce(sum(tx.points) FILTER (WHERE tx.kind = 'points_earn'), 0)    AS points_issued,
           coalesce(-sum(tx.points) FILTER (WHERE tx.kind = 'points_redeem'), 0) AS points_redeemed
    FROM loyalty_transactions AS tx
    WHERE %(t)s::timestamptz - tx.created_at < %(window)s
      AND %(t)s::timestamptz - tx.created_at >= interval '0'
)
SELECT CASE WHEN points_issued > 0 THEN points_redeemed::numeric / points_issued END AS value,
       points_issued,
       points_redeemed
FROM totals;
