-- The week of HTTP 429s behind docs/img/backtest-rate-limit-spikes.png (generated, not a
-- customer's): four stores with a daily rhythm and noise, and two real incidents (Mall on
-- 19 Nov 13:00-16:00, Station on 21 Nov 18:00-19:00). On a database made from
-- include/sql/schema/loyalty.sql:
--   psql -d bt -f include/sql/schema/loyalty.sql -f docs/img/backtest-rate-limit-spikes.sql
--   PYTHONPATH=plugins python -m loyalty_checks.backtest --check rate_limit_spikes \
--       --start 2026-11-16T08:00:00+00:00 --end 2026-11-23T08:00:00+00:00 --dsn postgresql:///bt \
--       --sweep threshold=80:200:10 --plot docs/img/backtest-rate-limit-spikes.png
INSERT INTO merchants (id, name) VALUES (1, 'Acme Coffee'), (2, 'Burger Palace');
INSERT INTO stores (id, merchant_id, name) VALUES (11, 1, 'Station'), (12, 1, 'Harbour'), (21, 2, 'Mall'), (22, 2, 'Airport');
SELECT setseed(0.42);
WITH hours AS (
  SELECT s.id AS store_id, h,
         greatest(1, round(
           CASE s.id WHEN 11 THEN 70 WHEN 12 THEN 45 WHEN 21 THEN 55 ELSE 30 END
           * (1 + 0.45 * sin(2 * pi() * ((extract(hour FROM h) - 9) / 24.0)))
           + 18 * random()
           + CASE WHEN s.id = 21 AND h BETWEEN timestamptz '2026-11-19 13:00Z' AND timestamptz '2026-11-19 16:00Z' THEN 160 ELSE 0 END
           + CASE WHEN s.id = 11 AND h BETWEEN timestamptz '2026-11-21 18:00Z' AND timestamptz '2026-11-21 19:00Z' THEN 120 ELSE 0 END
         ))::int AS n
  FROM stores s, generate_series(timestamptz '2026-11-16 08:30Z', timestamptz '2026-11-23 07:30Z', interval '1 hour') h
)
INSERT INTO rate_limit_events (store_id, occurred_at, method, path)
SELECT store_id, h, 'POST', '/api/loyalty' FROM hours, generate_series(1, n);
