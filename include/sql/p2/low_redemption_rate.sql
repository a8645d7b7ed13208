-- low_redemption_rate (P2): points redeemed / points issued in (T - window, T].
--   issued   sum(points) of points_earn transactions
--   redeemed -sum(points) of points_redeem transactions (stored negative)
--   no data  NULL when no point was issued in the window (does not fire)
-- Reads: loyalty_transactions_kind_created_at_idx (the two kinds’ window rows).
WITH window_points AS (
    SELECT tx.kind, tx.points
    FROM loyalty_transactions AS tx
    WHERE tx.kind IN ('points_earn', 'points_redeem')
      AND tx.created_at > %(t)s::timestamptz - %(window)s
      AND tx.created_at <= %(t)s::timestamptz
),
totals AS (
    SELECT coalesce(sum(points) FILTER (WHERE kind = 'points_earn'), 0)    AS points_issued,
           coalesce(-sum(points) FILTER (WHERE kind = 'points_redeem'), 0) AS points_redeemed
    FROM window_points
)
SELECT CASE WHEN points_issued > 0 THEN points_redeemed::numeric / points_issued END AS value,
       points_issued,
       points_redeemed
FROM totals;
