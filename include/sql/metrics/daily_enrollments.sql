-- Digest metric daily_enrollments: cards enrolled per UTC day, for the 7 (window) UTC
-- days ending with T’s day (that last day counted up to T). One row per day, oldest
-- first, days without enrollment included with 0.
--   label 'YYYY-MM-DD' (UTC), value cards enrolled that day
-- Reads: loyalty_cards_enrolled_at_idx.
WITH days AS (
    SELECT day AT TIME ZONE 'UTC'                         AS day_start,
           (day + interval '1 day') AT TIME ZONE 'UTC'    AS day_end,
           to_char(day, 'YYYY-MM-DD')                     AS label
    FROM generate_series(
             date_trunc('day', %(t)s::timestamptz AT TIME ZONE 'UTC') - %(window)s + interval '1 day',
             date_trunc('day', %(t)s::timestamptz AT TIME ZONE 'UTC'),
             interval '1 day') AS day
),
enrollments AS (
    SELECT c.enrolled_at
    FROM loyalty_cards AS c
    WHERE c.enrolled_at >= (SELECT min(day_start) FROM days)
      AND c.enrolled_at <= %(t)s::timestamptz
)
SELECT d.label,
       count(e.enrolled_at)::numeric AS value
FROM days AS d
LEFT JOIN enrollments AS e
       ON e.enrolled_at >= d.day_start
      AND e.enrolled_at < d.day_end
GROUP BY d.label
ORDER BY d.label;
