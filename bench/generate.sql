-- A loyalty platform at production scale, as of time T, for the benchmark (bench/run.py).
--
-- Run by bench/generate.py on a database whose tables come from
-- include/sql/schema/loyalty.sql (its CREATE INDEX statements are run after the load).
-- The file is split into sections at lines `-- @section <name>`; generate.py runs
-- `setup` first, then `transactions` (once per time chunk, %(chunk)s) on one session
-- while `emails`, `celery`, `sync_runs` and `rate_limits` run on a second one, then
-- `finish`. Sections are sent as one batch each with client-side binding: write no
-- percent sign other than the placeholders %(t)s, %(scale)s, %(chunks)s, %(chunk)s.
--
-- Scale 1.0 is the large tenant of spec/source-schema.md: 10,000 merchants, 30,000
-- stores, 2M cards, ~50M transactions, 10M e-mails, 1M Celery rows, ~5M HTTP 429s, 200k
-- wallet sync runs. Two years of history, growing (more cards, mail and traffic lately).
-- Set-based only (generate_series, no row loops). Pseudo-randomness is a hash of a row's
-- key (bench_gen.u), so a given (T, scale) always gives the same rows. Rows are inserted
-- in time order (ids follow time, as in production), so each table's time index is
-- physically correlated with the heap as it would be on the real database.
--
-- Skew: merchant sizes follow a Zipf law (merchant 1 is a chain with ~4 percent of the
-- cards; thousands of small merchants enrol a card or two a week), big merchants have
-- more stores, and a store's share of 429s is Zipf too.
--
-- As of T (a Monday 08:00 UTC by default) the checks see:
--   expiration_task_stale  fires: the daily loyalty.expire_points run at T - 5 h and its
--                          retry at T - 4 h failed; the last SUCCESS is ~29 h old
--   google_wallet_down     ok: the latest Google run failed 72 percent of its cards, the
--                          one before 18 percent (one bad run is not an outage)
--   wallet_sync_failures   fires for google (the last hour's runs), apple stays under 2 percent
--   email_failure_rate     fires: an SMTP relay has failed ~3.5 percent of the loyalty_*
--                          e-mails since T - 8 h (0.4 percent before): ~1.4 percent in 24 h
--   rate_limit_spikes      fires for three stores (peaks of 420, 185 and 104 a minute);
--                          a fourth peaks at exactly 100 (not above), and a 350/min spike
--                          two days ago is outside the window
--   P2                     low_enrollment for most small merchants, high_churn around
--                          its threshold, low_redemption_rate healthy (~0.45),
--                          low_cohort_retention as the churn curve makes it

-- @section setup

SET TimeZone = 'UTC';
DROP SCHEMA IF EXISTS bench_gen CASCADE;
CREATE SCHEMA bench_gen;

-- A uniform number in [0, 1) from a key and a salt: deterministic, plan-independent.
CREATE FUNCTION bench_gen.u(k bigint, salt integer) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$ SELECT (hashint8extended(k, salt) & 9007199254740991)::double precision / 9007199254740992.0 $fn$;

-- A stable UUID-looking text from a key and a salt (Celery task ids, wallet object ids).
CREATE FUNCTION bench_gen.fake_uuid(k bigint, salt integer) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$ SELECT md5(salt::text || ':' || k::text)::uuid::text $fn$;

-- Item 1..n of a power law with exponent a (Zipf-like: item k has weight ~ k^-a), drawn
-- by inverting its continuous distribution function with u in [0, 1).
CREATE FUNCTION bench_gen.zipf(u double precision, n integer, a double precision) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$ SELECT least(n, greatest(1, floor(power(1 + u * (power(n + 1, 1 - a) - 1), 1 / (1 - a)))::int)) $fn$;

CREATE TABLE bench_gen.params AS
SELECT t,
       scale,
       chunks,
       t - interval '730 days'                                     AS hist_start,
       greatest(20, round(10000 * scale))::int                     AS n_merchants,
       greatest(40, round(30000 * scale))::int                     AS n_stores,
       greatest(200, round(2000000 * scale))::int                  AS n_cards,
       greatest(5000, round(50000000 * scale))::bigint             AS n_tx_target,
       greatest(1000, round(10000000 * scale))::int                AS n_emails,
       greatest(1000, round(1000000 * scale))::int                 AS n_celery,
       greatest(100, round(100000 * scale))::int                   AS n_sync_cycles,   -- x 2 providers
       greatest(6000, round(5000000 * scale))::int                 AS n_429_target
FROM (SELECT %(t)s::timestamptz AS t, %(scale)s::float8 AS scale, %(chunks)s::int AS chunks) AS bound;

-- Merchants: ids in order of sign-up, more of them lately; merchant m's weight ~ m^-0.8
-- (its share of the cards, of the e-mails and, with the stores, of the chains).
CREATE TABLE bench_gen.merchant_info AS
WITH weighted AS (
    SELECT m AS id,
           p.t - interval '1 day' - interval '759 days' * power(1 - (m - 1)::float8 / p.n_merchants, 1.5) AS created_at,
           (power(m + 1, 0.2) - power(m, 0.2)) / (power(p.n_merchants + 1, 0.2) - 1) AS share
    FROM bench_gen.params AS p
    CROSS JOIN generate_series(1, p.n_merchants) AS m
),
store_counts AS (
    -- every merchant has a store; the other stores go to the big ones (chains)
    SELECT w.*, 1 + floor((p.n_stores - p.n_merchants) * w.share + bench_gen.u(w.id, 2))::int AS store_count
    FROM weighted AS w CROSS JOIN bench_gen.params AS p
)
SELECT s.*,
       1 + coalesce(sum(s.store_count) OVER (ORDER BY s.id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)::int
           AS store_first,
       CASE WHEN bench_gen.u(s.id, 3) < 0.45 THEN 'stamps' ELSE 'points' END AS program_type,
       CASE WHEN bench_gen.u(s.id, 3) < 0.45 THEN (ARRAY[6, 8, 10, 10, 12])[1 + floor(bench_gen.u(s.id, 4) * 5)::int] END
           AS stamps_target,
       bench_gen.u(s.id, 5) >= 0.03 AS program_active,                 -- 3 percent paused their program
       least(s.created_at + interval '1 day' + interval '6 days' * bench_gen.u(s.id, 6), p.t - interval '1 hour')
           AS program_created_at
FROM store_counts AS s CROSS JOIN bench_gen.params AS p;

INSERT INTO merchants (id, name, created_at)
SELECT id,
       CASE WHEN mod(id, 97) = 3 THEN 'Café <Zürich> & *Co* @channel ☕ ' || id
            ELSE (ARRAY['Brew & Bean', 'Burger Palace', 'Green Leaf', 'Bella Napoli', 'Sushi Zen', 'Bäckerei',
                        'Taco Loco', 'Daily Grind', 'Noodle House', 'Juice Co.', 'Bagel Bar', 'Bookshop'])
                     [1 + mod(id, 12)] || ' ' || id END,
       created_at
FROM bench_gen.merchant_info
ORDER BY id;

INSERT INTO stores (id, merchant_id, name, created_at)
SELECT mi.store_first + k,
       mi.id,
       CASE WHEN mod(mi.store_first + k, 101) = 7 THEN 'Store <!here> *' || (mi.store_first + k) || '* _x_'
            ELSE 'Store ' || (mi.store_first + k) || ' – '
                 || (ARRAY['Downtown', 'Station', 'Old Town', 'Harbour', 'Mall', 'Airport', 'Campus'])[1 + mod(mi.store_first + k, 7)] END,
       mi.created_at + (p.t - mi.created_at) * k / mi.store_count
FROM bench_gen.merchant_info AS mi
CROSS JOIN bench_gen.params AS p
CROSS JOIN LATERAL generate_series(0, mi.store_count - 1) AS k
ORDER BY 1;

-- Stores are numbered 1..n (the 429s pick one by a power law: store 1 belongs to the
-- biggest chain).
CREATE TABLE bench_gen.store_total AS SELECT count(*)::int AS n FROM stores;

INSERT INTO loyalty_programs (id, merchant_id, program_type, stamps_target, is_active, created_at)
SELECT id, id, program_type, stamps_target, program_active, program_created_at
FROM bench_gen.merchant_info
ORDER BY id;

-- Cards: a plan per card (merchant, enrolment, visit rhythm, drop-out), from which the
-- transactions are generated chunk by chunk. The visit gap is scaled (factor k) so that
-- the transactions add up to n_tx_target.
CREATE UNLOGGED TABLE bench_gen.card_raw AS
WITH drawn AS (
    SELECT n, bench_gen.zipf(bench_gen.u(n, 10), p.n_merchants, 0.8) AS merchant_id
    FROM bench_gen.params AS p
    CROSS JOIN generate_series(1::bigint, p.n_cards::bigint) AS n
),
placed AS (
    SELECT d.n, mi.id AS merchant_id, mi.program_type, mi.stamps_target, mi.store_first, mi.store_count,
           greatest(mi.program_created_at, p.hist_start) AS start_at, p.t
    FROM drawn AS d
    JOIN bench_gen.merchant_info AS mi ON mi.id = d.merchant_id
    CROSS JOIN bench_gen.params AS p
)
SELECT pl.n,
       pl.merchant_id, pl.program_type, pl.stamps_target, pl.store_first, pl.store_count,
       -- 5 percent enrol online (no store); the flagship store enrols the most
       CASE WHEN bench_gen.u(pl.n, 11) < 0.05 THEN NULL
            ELSE pl.store_first + floor(pl.store_count * power(bench_gen.u(pl.n, 12), 2))::int END AS store_id,
       -- more enrolments lately: density grows like x^0.6 from the program's start to T
       pl.start_at + (pl.t - pl.start_at) * power(bench_gen.u(pl.n, 13), 1 / 1.6) AS enrolled_at,
       bench_gen.u(pl.n, 14) < 0.12 AS never_used,
       -- stays a customer for an exponential time (mean 135 days)
       -ln(1 - bench_gen.u(pl.n, 15)) * 135 * 86400 AS life_s,
       (3 + 45 * power(bench_gen.u(pl.n, 16), 2)) * 86400 AS gap_raw_s,
       CASE WHEN pl.program_type = 'points' THEN 1.31 ELSE 1.04 + 1.0 / pl.stamps_target END AS tx_per_visit,
       pl.t
FROM placed AS pl;

CREATE UNLOGGED TABLE bench_gen.card_plan AS
WITH spans AS (
    SELECT r.*,
           extract(epoch FROM r.enrolled_at)::float8 AS e_s,
           least(extract(epoch FROM r.enrolled_at)::float8 + r.life_s, extract(epoch FROM r.t)::float8)
               - extract(epoch FROM r.enrolled_at)::float8 - 60 AS dur_s,
           extract(epoch FROM r.enrolled_at)::float8 + r.life_s < extract(epoch FROM r.t)::float8 AS churned
    FROM bench_gen.card_raw AS r
),
factor AS (
    -- expected visits of a card ~ dur / (gap k) + 0.25: solve for k
    SELECT sum(tx_per_visit * dur_s / gap_raw_s)
               / greatest((SELECT n_tx_target FROM bench_gen.params) - 0.25 * sum(tx_per_visit), 1) AS k
    FROM spans WHERE NOT never_used AND dur_s > 0
),
planned AS (
    SELECT s.*, s.gap_raw_s * f.k AS gap_s,
           CASE WHEN s.never_used OR s.dur_s <= 0 THEN 0
                ELSE greatest(0, floor(s.dur_s / (s.gap_raw_s * f.k) - 0.25)::int + 1) END AS nv
    FROM spans AS s CROSS JOIN factor AS f
),
visited AS (
    -- the last visit, by the same formula as the transactions section (visit i of the
    -- card drawn as n is at e + 1 min + (i + jitter) * gap, jitter u(n * 4096 + i, 30))
    SELECT pl.*,
           CASE WHEN pl.nv > 0 THEN
               to_timestamp(pl.e_s + 60 + ((pl.nv - 1)
                   + CASE WHEN pl.nv = 1 THEN 0 ELSE (bench_gen.u(pl.n * 4096 + pl.nv - 1, 30) - 0.5) * 0.5 END) * pl.gap_s)
           END AS last_visit_at,
           bench_gen.u(pl.n, 17) AS fate
    FROM planned AS pl
),
fated AS (
    SELECT v.*,
           -- points expire 180 days after the last visit, taken by the first daily
           -- loyalty.expire_points run after that (runs at T - 5 h - k days; k >= 1 succeed)
           CASE WHEN v.program_type = 'points' AND v.churned AND v.nv > 0 THEN
               v.t - interval '5 hours' + interval '2 minutes'
                   - make_interval(days => floor(extract(epoch FROM (v.t - interval '5 hours')
                                                     - (v.last_visit_at + interval '180 days')) / 86400)::int)
           END AS expire_run,
           -- a fifth of the members who left deactivated their card
           CASE WHEN v.churned AND v.nv > 0 AND v.fate < 0.2 THEN
               least(v.last_visit_at + interval '10 days' + interval '60 days' * bench_gen.u(v.n, 18), v.t - interval '1 hour')
           END AS deactivated_at
    FROM visited AS v
)
SELECT row_number() OVER (ORDER BY f.enrolled_at, f.n) AS id,
       f.n, f.merchant_id, f.program_type, f.stamps_target, f.store_first, f.store_count, f.store_id,
       f.enrolled_at, f.e_s, f.gap_s, f.nv, f.churned, f.last_visit_at, f.fate, f.deactivated_at,
       CASE WHEN f.expire_run <= f.t - interval '28 hours' THEN f.expire_run END AS expire_at
FROM fated AS f;

ANALYZE bench_gen.card_plan;

INSERT INTO loyalty_cards (id, program_id, merchant_id, enrolled_store_id, customer_email, is_active, enrolled_at,
                           deactivated_at, anonymized_at, stamp_count, points_balance, last_activity_at,
                           google_object_id, apple_serial_number)
SELECT c.id,
       c.merchant_id,
       c.merchant_id,
       c.store_id,
       CASE WHEN c.deactivated_at IS NOT NULL AND c.fate < 0.07 AND c.deactivated_at + interval '30 days' < p.t
            THEN NULL ELSE 'member' || c.id || '@example.com' END,
       c.deactivated_at IS NULL,
       c.enrolled_at,
       c.deactivated_at,
       CASE WHEN c.deactivated_at IS NOT NULL AND c.fate < 0.07 AND c.deactivated_at + interval '30 days' < p.t
            THEN c.deactivated_at + interval '30 days' END,
       CASE WHEN c.program_type = 'stamps' THEN mod(c.nv, c.stamps_target) ELSE 0 END,
       CASE WHEN c.program_type = 'points' AND c.expire_at IS NULL THEN round(c.nv * 55 * 0.5)::int ELSE 0 END,
       c.last_visit_at,
       CASE WHEN bench_gen.u(c.n, 19) < 0.35 THEN 'loyalty-' || bench_gen.fake_uuid(c.id, 19) END,
       CASE WHEN bench_gen.u(c.n, 20) < 0.25 THEN 'pass.' || upper(substr(md5(c.id::text), 1, 20)) END
FROM bench_gen.card_plan AS c
CROSS JOIN bench_gen.params AS p
ORDER BY c.id;

-- @section transactions

SET TimeZone = 'UTC';
-- One time chunk (%(chunk)s of params.chunks) of the transactions, in time order. Chunk
-- bounds follow the square root of time, so that the growing later months are not one
-- huge chunk. A visit belongs to the chunk of its time; its few follow-up rows (void,
-- redeem, adjustment: up to 10 minutes later) go with it.
INSERT INTO loyalty_transactions (id, card_id, merchant_id, store_id, kind, stamps, points, created_at)
WITH bounds AS (
    SELECT p.t,
           p.hist_start + (p.t - p.hist_start) * sqrt(%(chunk)s::float8 / p.chunks) AS a,
           CASE WHEN %(chunk)s::int + 1 >= p.chunks THEN p.t + interval '1 day'
                ELSE p.hist_start + (p.t - p.hist_start) * sqrt((%(chunk)s::int + 1)::float8 / p.chunks) END AS b
    FROM bench_gen.params AS p
),
visits AS (
    SELECT c.id AS card_id, c.n, c.merchant_id, c.program_type, c.stamps_target, c.store_id, c.store_first,
           c.store_count, v.i, b.a, b.b, b.t,
           to_timestamp(c.e_s + 60 + (v.i + CASE WHEN v.i = 0 THEN 0
                                               ELSE (bench_gen.u(c.n * 4096 + v.i, 30) - 0.5) * 0.5 END) * c.gap_s) AS at
    FROM bounds AS b
    JOIN bench_gen.card_plan AS c
      ON c.nv > 0 AND c.enrolled_at < b.b AND c.last_visit_at >= b.a
    CROSS JOIN LATERAL generate_series(
        greatest(0, ceil((extract(epoch FROM b.a) - c.e_s - 60) / c.gap_s - 0.25)::int),
        least(c.nv - 1, floor((extract(epoch FROM b.b) - c.e_s - 60) / c.gap_s + 0.25)::int)) AS v (i)
),
priced AS (
    SELECT v.*,
           5 * (2 + floor(bench_gen.u(v.n * 4096 + v.i, 31) * 19)::int) AS earn,
           -- 15 percent of visits at another store of the merchant
           CASE WHEN v.store_id IS NULL OR bench_gen.u(v.n * 4096 + v.i, 32) < 0.15
                THEN v.store_first + floor(v.store_count * bench_gen.u(v.n * 4096 + v.i, 33))::int
                ELSE v.store_id END AS at_store,
           bench_gen.u(v.n * 4096 + v.i, 34) < 0.02 AS mistaken,       -- a duplicate, voided
           bench_gen.u(v.n * 4096 + v.i, 35) < 0.01 AS adjusted        -- a goodwill adjustment
    FROM visits AS v
    WHERE v.at >= v.a AND v.at < v.b
),
kinds (ord, kind, program_type, delay) AS (
    VALUES (1, 'stamp_add',     'stamps', interval '0'),
           (2, 'stamp_add',     'stamps', interval '20 seconds'),     -- a duplicate ...
           (3, 'stamp_void',    'stamps', interval '40 seconds'),     -- ... voided
           (4, 'stamp_redeem',  'stamps', interval '1 minute'),
           (5, 'points_earn',   'points', interval '0'),
           (6, 'points_earn',   'points', interval '20 seconds'),
           (7, 'points_void',   'points', interval '40 seconds'),
           (8, 'points_redeem', 'points', interval '1 minute'),
           (9, 'points_adjust', 'points', interval '10 minutes')
),
rows AS (
    SELECT pr.card_id, pr.merchant_id, pr.at_store AS store_id, k.kind,
           CASE k.ord WHEN 1 THEN 1 WHEN 2 THEN 1 WHEN 3 THEN -1 WHEN 4 THEN -pr.stamps_target ELSE 0 END AS stamps,
           CASE k.ord WHEN 5 THEN pr.earn WHEN 6 THEN pr.earn WHEN 7 THEN -pr.earn
                      -- every 4th visit a points member spends 25 to 65 percent of what 4 visits earn
                      WHEN 8 THEN -(floor(4 * 55 * (0.25 + 0.4 * bench_gen.u(pr.n * 4096 + pr.i, 36))))::int
                      WHEN 9 THEN 25 ELSE 0 END AS points,
           pr.at + k.delay AS created_at, k.ord
    FROM priced AS pr
    JOIN kinds AS k ON k.program_type = pr.program_type
    WHERE CASE k.ord WHEN 1 THEN true WHEN 5 THEN true
                     WHEN 2 THEN pr.mistaken WHEN 3 THEN pr.mistaken WHEN 6 THEN pr.mistaken WHEN 7 THEN pr.mistaken
                     WHEN 4 THEN mod(pr.i + 1, pr.stamps_target) = 0
                     WHEN 8 THEN mod(pr.i + 1, 4) = 0
                     ELSE pr.adjusted END
      AND pr.at + k.delay <= pr.t
    UNION ALL
    -- expired points, taken by the daily loyalty.expire_points run
    SELECT c.id, c.merchant_id, NULL, 'points_expire', 0, -greatest(round(c.nv * 55 * 0.5)::int, 1), c.expire_at, 10
    FROM bounds AS b
    JOIN bench_gen.card_plan AS c ON c.expire_at >= b.a AND c.expire_at < b.b
)
SELECT (SELECT coalesce(max(id), 0) FROM loyalty_transactions)
           + row_number() OVER (ORDER BY r.created_at, r.card_id, r.ord),
       r.card_id, r.merchant_id, r.store_id, r.kind, r.stamps, r.points, r.created_at
FROM rows AS r
ORDER BY r.created_at, r.card_id, r.ord;

-- @section emails

SET TimeZone = 'UTC';
-- One row per e-mail, in time order (e-mail n of N is sent at the n/N quantile of a
-- growing volume). 78 percent are loyalty_* e-mails; `loyaltyreport_weekly` is not one
-- (LIKE 'loyalty\_...' must not match it).
INSERT INTO email_logs (id, template_code, recipient, status, merchant_id, created_at, sent_at, error_message)
WITH mail AS (
    SELECT n,
           p.hist_start + (p.t - p.hist_start) * power(n::float8 / p.n_emails, 1 / 1.6) AS created_at,
           bench_gen.u(n, 100) AS kind_draw,
           bench_gen.u(n, 101) AS status_draw,
           p.t, p.n_cards, p.n_merchants
    FROM bench_gen.params AS p
    CROSS JOIN generate_series(1, p.n_emails) AS n
),
typed AS (
    SELECT m.*,
           CASE WHEN kind_draw < 0.18 THEN 'loyalty_welcome'
                WHEN kind_draw < 0.30 THEN 'loyalty_reward_unlocked'
                WHEN kind_draw < 0.40 THEN 'loyalty_points_redeemed'
                WHEN kind_draw < 0.50 THEN 'loyalty_points_expiring'
                WHEN kind_draw < 0.58 THEN 'loyalty_birthday_reward'
                WHEN kind_draw < 0.66 THEN 'loyalty_wallet_pass_ready'
                WHEN kind_draw < 0.78 THEN 'loyalty_reward_reminder'
                WHEN kind_draw < 0.80 THEN 'loyaltyreport_weekly'
                WHEN kind_draw < 0.88 THEN 'order_confirmation'
                WHEN kind_draw < 0.92 THEN 'password_reset'
                WHEN kind_draw < 0.98 THEN 'marketing_newsletter'
                ELSE 'invoice_monthly' END AS template_code
    FROM mail AS m
),
statused AS (
    SELECT ty.*,
           CASE WHEN ty.created_at > ty.t - interval '10 minutes' AND ty.status_draw < 0.8 THEN 'queued'
                WHEN ty.status_draw < pf THEN 'failed'
                WHEN ty.status_draw < pf + 0.02 THEN 'bounced'
                WHEN ty.status_draw < pf + 0.10 THEN 'sent'
                WHEN ty.status_draw < 0.55 THEN 'delivered'
                WHEN ty.status_draw < 0.85 THEN 'opened'
                ELSE 'clicked' END AS status
    FROM typed AS ty
    CROSS JOIN LATERAL (
        -- an SMTP relay failing loyalty mail since T - 8 h
        SELECT CASE WHEN ty.template_code LIKE 'loyalty\_%%' AND ty.created_at > ty.t - interval '8 hours'
                    THEN 0.035 ELSE 0.004 END AS pf
    ) AS f
)
SELECT s.n,
       s.template_code,
       'customer' || (1 + floor(bench_gen.u(s.n, 102) * s.n_cards)::int) || '@example.com',
       s.status,
       CASE WHEN s.template_code IN ('password_reset', 'marketing_newsletter') THEN NULL
            ELSE bench_gen.zipf(bench_gen.u(s.n, 103), s.n_merchants, 0.8) END,
       s.created_at,
       CASE WHEN s.status NOT IN ('queued', 'failed') THEN s.created_at + interval '2 seconds' + interval '40 seconds' * bench_gen.u(s.n, 104) END,
       CASE s.status
           WHEN 'failed'  THEN 'SMTPConnectTimeoutError: connection to the SMTP relay timed out after 30 s'
           WHEN 'bounced' THEN '550 5.1.1 Recipient address rejected: user unknown'
       END
FROM statused AS s
ORDER BY s.n;

-- @section celery

SET TimeZone = 'UTC';
-- Celery's result backend, in order of date_done: loyalty.sync_wallet_passes every 5
-- minutes (one per wallet sync cycle), loyalty.expire_points daily at T - 5 h (+ k days),
-- and the platform's other tasks. date_done is UTC without time zone.
INSERT INTO celery_taskmeta (id, task_id, status, result, date_done, traceback, name, args, kwargs, worker, retries, queue)
WITH tasks AS (
    -- wallet sync cycles: k = 0 is still running at T
    SELECT bench_gen.fake_uuid(k, 70) AS task_id,
           CASE WHEN k = 0 THEN 'STARTED' WHEN bench_gen.u(k, 71) < 0.003 THEN 'FAILURE' ELSE 'SUCCESS' END AS status,
           CASE WHEN k = 0 THEN NULL ELSE p.t - interval '2 minutes' - k * interval '5 minutes' + interval '3 minutes' END AS done,
           'loyalty.sync_wallet_passes' AS name, 'wallet' AS queue, k AS key
    FROM bench_gen.params AS p
    CROSS JOIN generate_series(0, p.n_sync_cycles - 1) AS k
    UNION ALL
    -- daily point expiry: today's run (T - 5 h) and its retry (T - 4 h) failed
    SELECT bench_gen.fake_uuid(k, 60),
           CASE WHEN k = 0 THEN 'FAILURE' WHEN bench_gen.u(k, 62) < 0.03 THEN 'FAILURE' ELSE 'SUCCESS' END,
           p.t - interval '5 hours' - make_interval(days => k) + interval '2 minutes' + interval '3 minutes' * bench_gen.u(k, 61),
           'loyalty.expire_points', 'loyalty', k
    FROM bench_gen.params AS p
    CROSS JOIN generate_series(0, 729) AS k
    UNION ALL   -- the retry an hour after a failure (today's failed too)
    SELECT bench_gen.fake_uuid(k, 63),
           CASE WHEN k = 0 THEN 'FAILURE' ELSE 'SUCCESS' END,
           p.t - interval '4 hours' - make_interval(days => k) + interval '2 minutes',
           'loyalty.expire_points', 'loyalty', k
    FROM bench_gen.params AS p
    CROSS JOIN generate_series(0, 729) AS k
    WHERE k = 0 OR bench_gen.u(k, 62) < 0.03
    UNION ALL
    -- everything else the platform's workers run
    SELECT bench_gen.fake_uuid(n, 64),
           CASE WHEN h < 0.001 THEN 'PENDING' WHEN h < 0.026 THEN 'FAILURE' WHEN h < 0.036 THEN 'RETRY'
                WHEN h < 0.040 THEN 'REVOKED' ELSE 'SUCCESS' END,
           CASE WHEN h < 0.001 THEN NULL ELSE at END,
           CASE WHEN d < 0.35 THEN 'loyalty.send_email'
                WHEN d < 0.50 THEN 'loyalty.update_card_balance'
                WHEN d < 0.58 THEN 'loyalty.issue_birthday_rewards'
                WHEN d < 0.78 THEN 'notifications.send_push'
                WHEN d < 0.98 THEN 'orders.process_payment'
                ELSE 'reports.generate_daily' END,
           CASE WHEN d < 0.58 THEN 'loyalty' ELSE 'default' END,
           n
    FROM (
        SELECT n, bench_gen.u(n, 65) AS h, bench_gen.u(n, 66) AS d,
               p.hist_start + (p.t - p.hist_start) * power(n::float8 / f.cnt, 1 / 1.6) AS at
        FROM bench_gen.params AS p
        CROSS JOIN LATERAL (SELECT greatest(0, p.n_celery - p.n_sync_cycles - 730 - 30)::int AS cnt) AS f
        CROSS JOIN generate_series(1, f.cnt) AS n
    ) AS other
)
SELECT row_number() OVER (ORDER BY tk.done NULLS LAST, tk.task_id),
       tk.task_id,
       tk.status,
       CASE WHEN tk.status = 'SUCCESS' THEN '\x80049505000000000000004e2e'::bytea END,
       tk.done AT TIME ZONE 'UTC',
       CASE WHEN tk.status = 'FAILURE' THEN
           E'Traceback (most recent call last):\n  File "/app/tasks.py", line 142, in run\n'
           || E'psycopg2.errors.QueryCanceled: canceling statement due to statement timeout\n' END,
       tk.name,
       '\x80049505000000000000002e'::bytea,
       '\x80047d942e'::bytea,
       'celery@worker-' || (1 + mod(tk.key, 4)),
       CASE WHEN tk.status IN ('FAILURE', 'RETRY') THEN 3 ELSE 0 END,
       tk.queue
FROM tasks AS tk
ORDER BY 1;

-- @section sync_runs

SET TimeZone = 'UTC';
-- Wallet sync runs: per cycle (every 5 minutes, n_sync_cycles of them) one Google and
-- one Apple run, in time order. Quiet nights sync nothing (cards_total = 0); the cycle
-- started 2 minutes before T is still running (finished_at NULL).
INSERT INTO loyalty_wallet_sync_runs (id, provider, celery_task_id, started_at, finished_at, cards_total, cards_failed,
                                      failed_card_ids)
WITH runs AS (
    SELECT k, pv.provider, pv.salt, p.t, p.n_cards,
           p.t - interval '2 minutes' - k * interval '5 minutes' + pv.offset_s * interval '1 second' AS started_at
    FROM bench_gen.params AS p
    CROSS JOIN generate_series(0, p.n_sync_cycles - 1) AS k
    CROSS JOIN (VALUES ('google', 80, 2), ('apple', 90, 5)) AS pv (provider, salt, offset_s)
),
sized AS (
    SELECT r.*,
           CASE WHEN extract(hour FROM r.started_at) BETWEEN 1 AND 4 AND bench_gen.u(r.k, r.salt) < 0.5 AND r.k > 12
                THEN 0 ELSE 20 + floor(380 * power(bench_gen.u(r.k, r.salt + 1), 2))::int END AS cards_total,
           CASE WHEN r.provider = 'google' AND r.k = 1 THEN 0.72
                WHEN r.provider = 'google' AND r.k = 2 THEN 0.18
                WHEN r.provider = 'google' AND r.k BETWEEN 3 AND 12 THEN 0.03 + 0.04 * bench_gen.u(r.k, r.salt + 2)
                WHEN bench_gen.u(r.k, r.salt + 3) < 0.003 THEN 0.3 + 0.6 * bench_gen.u(r.k, r.salt + 2)   -- a blip
                ELSE 0.02 * power(bench_gen.u(r.k, r.salt + 2), 2) END AS failure_share
    FROM runs AS r
),
failed AS (
    SELECT s.*,
           CASE WHEN floor(s.cards_total * s.failure_share) = 0 THEN '{}'::bigint[]
                ELSE ARRAY(SELECT DISTINCT 1 + floor(bench_gen.u(s.k * 1024 + j, s.salt + 5) * s.n_cards)::bigint
                           FROM generate_series(1, floor(s.cards_total * s.failure_share)::int) AS j) END AS failed_ids
    FROM sized AS s
)
SELECT row_number() OVER (ORDER BY f.started_at, f.provider),
       f.provider,
       bench_gen.fake_uuid(f.k, 70),
       f.started_at,
       CASE WHEN f.k > 0 THEN f.started_at + interval '20 seconds' + interval '160 seconds' * bench_gen.u(f.k, f.salt + 4) END,
       f.cards_total,
       cardinality(f.failed_ids),      -- distinct ids: two draws may hit one card
       f.failed_ids
FROM failed AS f
ORDER BY f.started_at, f.provider;

-- @section rate_limits

SET TimeZone = 'UTC';
-- HTTP 429s: bursts of 1 to 70 in one minute at a store (Zipf over stores; 3 percent
-- without a store) over two years, growing, in time order; then the spikes of the last
-- hour and one two days ago.
INSERT INTO rate_limit_events (id, store_id, occurred_at, method, path)
WITH bursts AS (
    SELECT b,
           date_trunc('minute', p.hist_start + (p.t - p.hist_start) * power(b::float8 / nb.n, 1 / 1.6)) AS minute,
           CASE WHEN bench_gen.u(b, 201) < 0.03 THEN NULL
                ELSE bench_gen.zipf(bench_gen.u(b, 200), st.n, 0.7) END AS store_id,
           1 + floor(70 * power(bench_gen.u(b, 202), 3))::int AS events,
           p.t
    FROM bench_gen.params AS p
    CROSS JOIN bench_gen.store_total AS st
    -- the spikes below add 4,398 events
    CROSS JOIN LATERAL (SELECT greatest(1, round((p.n_429_target - 4398) / 18.5))::int AS n) AS nb
    CROSS JOIN generate_series(1, nb.n) AS b
),
spikes AS (
    SELECT 1000000000 + row_number() OVER (ORDER BY s.minutes_ago DESC, s.store_share) AS b,
           date_trunc('minute', p.t) - make_interval(mins => s.minutes_ago) AS minute,
           greatest(1, round(sc.n * s.store_share))::bigint AS store_id,
           s.events, p.t
    FROM bench_gen.params AS p
    CROSS JOIN bench_gen.store_total AS sc
    CROSS JOIN (VALUES
        -- a scraper hammering one store: peak 420 a minute
        (1.0 / 7, 35, 60), (1.0 / 7, 34, 120), (1.0 / 7, 33, 240), (1.0 / 7, 32, 380), (1.0 / 7, 31, 420),
        (1.0 / 7, 30, 410), (1.0 / 7, 29, 395), (1.0 / 7, 28, 300), (1.0 / 7, 27, 180), (1.0 / 7, 26, 90),
        -- a POS integration retrying in a loop: peak 185
        (1.0 / 3, 50, 80), (1.0 / 3, 49, 150), (1.0 / 3, 48, 185), (1.0 / 3, 47, 160), (1.0 / 3, 46, 90),
        -- just over the threshold, and exactly at it (does not fire)
        (1.0 / 2, 12, 90), (1.0 / 2, 11, 104), (1.0 / 2, 10, 98),
        (2.0 / 3, 20, 99), (2.0 / 3, 19, 100), (2.0 / 3, 18, 97),
        -- two days ago: outside the window
        (5.0 / 6, 2 * 24 * 60 + 30, 350), (5.0 / 6, 2 * 24 * 60 + 29, 200)
    ) AS s (store_share, minutes_ago, events)
),
events AS (
    SELECT bu.store_id, bu.minute + make_interval(secs => 59.0 * e / bu.events) AS occurred_at, bu.b, e, bu.t
    FROM (SELECT b, minute, store_id, events, t FROM bursts
          UNION ALL
          SELECT b, minute, store_id, events, t FROM spikes) AS bu
    CROSS JOIN LATERAL generate_series(0, bu.events - 1) AS e
)
SELECT row_number() OVER (ORDER BY ev.b, ev.e),
       ev.store_id,
       ev.occurred_at,
       CASE WHEN ev.store_id IS NULL OR mod(ev.e, 3) = 2 THEN 'GET' ELSE 'POST' END,
       CASE WHEN ev.store_id IS NULL THEN '/api/v1/loyalty/public/programs'
            ELSE '/api/v1/loyalty/stores/' || ev.store_id
                 || (ARRAY['/stamps', '/points', '/cards/lookup'])[1 + mod(ev.e, 3)] END
FROM events AS ev
WHERE ev.occurred_at <= ev.t
ORDER BY ev.b, ev.e;

-- @section finish

-- Identity sequences continue after the generated ids (as after a real load).
SELECT setval(pg_get_serial_sequence('email_logs', 'id'), greatest((SELECT max(id) FROM email_logs), 1));
SELECT setval(pg_get_serial_sequence('rate_limit_events', 'id'), greatest((SELECT max(id) FROM rate_limit_events), 1));
SELECT setval(pg_get_serial_sequence('loyalty_transactions', 'id'), greatest((SELECT max(id) FROM loyalty_transactions), 1));
SELECT setval(pg_get_serial_sequence('loyalty_wallet_sync_runs', 'id'),
              greatest((SELECT max(id) FROM loyalty_wallet_sync_runs), 1));
SELECT setval('task_id_sequence', greatest((SELECT max(id) FROM celery_taskmeta), 1));
DROP SCHEMA bench_gen CASCADE;
