-- A small, realistic loyalty platform as of time T, with deliberate incidents.
--
-- Run by demo/generate.py in one transaction on a database created from
-- include/sql/schema/loyalty.sql, with three bound parameters:
--   %(t)s          T (timestamptz): the data ends at T, nothing is dated after it
--   %(scale)s      1.0 = about 20 merchants, 40 stores, 3000 cards, 25k transactions
--   %(incidents)s  true = the incidents below are present as of T; false = a platform on
--                  which no P0/P1 check fires (and the P2 ones are healthy too)
-- The parameters are bound once, into the temporary table demo_params, which every
-- statement reads. Set-based only: generate_series, no row loops. Pseudo-randomness is a
-- hash of a row's key (pg_temp.u), so a given (T, scale, incidents) always gives the same
-- rows. The file is sent as one batch with client-side binding: write no percent sign in
-- it other than the three placeholders above.
--
-- Incidents as of T (incidents = true); checks.md + include/checks.yaml for the checks:
--   expiration_task_stale  loyalty.expire_points runs daily at T - 7 h (+ k days); its last
--                          SUCCESS finished about 31 h before T, the run at T - 7 h and a
--                          manual re-run at T - 3 h failed.
--   google_wallet_down     the two latest finished Google runs failed 80 and 70 percent of
--                          their cards (the one before 30 percent); Apple stays healthy.
--   wallet_sync_failures   fires for google only (apple at most 2 percent per run).
--   email_failure_rate     every 33rd loyalty_* e-mail that left the queue in the last
--                          24 h failed (about 3 percent); non-loyalty mail fails too but
--                          is out of scope.
--   rate_limit_spikes      stores 3 (a hostile name, to show Slack escaping) and 6 peak at
--                          187 and 131 HTTP 429s in one minute; every other store stays
--                          at 30 a minute or less. 150 a minute without a store (not a
--                          store: out of scope), and a 250/min spike of store 25 two days
--                          ago (outside the 1 h window).
--   store_transactions_drop  store 2 (merchant 1) scanned about 10 stamps an hour at this
--                          time of the week for weeks; none in the 2 hours before T.
--   P2                     low_enrollment for merchants 7 (2 cards) and 13 (none) in 7 d;
--                          high_churn and low_cohort_retention fire (members who joined
--                          in summer dropped out); low_redemption_rate is healthy.
-- Also present in both modes: merchant 19's program is inactive (not eligible for
-- low_enrollment); merchant 20's program was created 3 days before T (not eligible yet);
-- sync runs that are still going (finished_at null) and night runs with cards_total = 0.

SET LOCAL TimeZone = 'UTC';

DROP TABLE IF EXISTS pg_temp.demo_params, pg_temp.demo_cards, pg_temp.demo_visits,
    pg_temp.demo_tx, pg_temp.demo_wallet, pg_temp.demo_sync_cycles;

CREATE TEMP TABLE demo_params ON COMMIT DROP AS
SELECT t,
       scale,
       incidents,
       date_trunc('minute', t)                                  AS t_min,
       greatest(20, round(20 * scale)::int)                     AS n_merchants,
       greatest(200, round(3000 * scale)::int)                  AS n_cards,
       -- share of new members who stop coming within ~2.5 months; in an incident most of
       -- those who joined in summer (T - 200 d to T - 60 d) dropped out
       CASE WHEN incidents THEN 0.50 ELSE 0.25 END              AS p_drop,
       CASE WHEN incidents THEN 0.70 ELSE 0.25 END              AS p_drop_summer,
       -- share of long-standing members who lapsed 30 to 90 days before T (high_churn)
       CASE WHEN incidents THEN 0.30 ELSE 0.0 END               AS p_lapse,
       -- the latest SUCCESS of loyalty.expire_points (the run at T - 7 h fails in an incident)
       t - CASE WHEN incidents THEN interval '31 hours' ELSE interval '7 hours' END AS expire_last_ok
FROM (SELECT %(t)s::timestamptz AS t, %(scale)s::float8 AS scale, %(incidents)s::boolean AS incidents) AS bound;

-- A uniform number in [0, 1) from a key and a salt: deterministic, plan-independent.
CREATE OR REPLACE FUNCTION pg_temp.u(k bigint, salt integer) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$ SELECT (hashint8extended(k, salt) & 9007199254740991)::double precision / 9007199254740992.0 $fn$;

-- A stable UUID-looking text from a key and a salt (Celery task ids, Apple serials).
CREATE OR REPLACE FUNCTION pg_temp.fake_uuid(k bigint, salt integer) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$ SELECT md5(salt::text || ':' || k::text)::uuid::text $fn$;

-- ---------------------------------------------------------------------------------------
-- Merchants, stores, programs
-- ---------------------------------------------------------------------------------------

INSERT INTO merchants (id, name, created_at)
SELECT m,
       coalesce(n.name, 'Merchant ' || m),
       p.t - CASE WHEN m = 20 THEN interval '10 days'
                  ELSE make_interval(days => 390 + mod(m * 7, 60)) END
FROM demo_params AS p
CROSS JOIN generate_series(1, p.n_merchants) AS m
LEFT JOIN (VALUES
    (1, 'Brew & Bean Coffee'),   (2, 'Burger Palace Group'), (3, 'Café Zürich ☕'),
    (4, 'Green Leaf Salads'),    (5, 'Pizzeria Bella Napoli'), (6, 'Sushi <Zen> Bar'),
    (7, 'Bäckerei Müller'),      (8, 'Taco Loco *Fiesta*'),  (9, 'The Daily Grind'),
    (10, 'Noodle House 🍜'),     (11, 'Fresh Juice Co.'),     (12, 'Bagel & Lox'),
    (13, 'Corner Bookshop'),     (14, 'FitFuel Smoothies'),   (15, 'Chez Marcel'),
    (16, 'Donut Disco'),         (17, 'Kebab King'),          (18, 'Tea Time @ Home'),
    (19, 'Seasonal Ice Cream'),  (20, 'Pho Saigon 88')
) AS n (id, name) ON n.id = m;

-- Two stores per merchant: 2m - 1 and 2m.
INSERT INTO stores (id, merchant_id, name, created_at)
SELECT 2 * m.id - 2 + k,
       m.id,
       CASE 2 * m.id - 2 + k
           WHEN 3 THEN 'Burger <!channel> *Palace* & Co_ ~test~ <http://evil.example|click>'
           WHEN 6 THEN 'Café Zürich – Hauptbahnhof 🚉'
           ELSE m.name || ' – ' || (ARRAY['Downtown', 'Station', 'Old Town', 'Harbour', 'Mall'])[1 + mod(m.id + k, 5)]
       END,
       m.created_at + make_interval(days => 1 + 30 * (k - 1))
FROM merchants AS m
CROSS JOIN generate_series(1, 2) AS k;

-- One program per merchant: odd merchants collect stamps, even ones points.
INSERT INTO loyalty_programs (id, merchant_id, program_type, stamps_target, is_active, created_at)
SELECT m.id,
       m.id,
       CASE WHEN mod(m.id, 2) = 1 THEN 'stamps' ELSE 'points' END,
       CASE WHEN mod(m.id, 2) = 1 THEN 8 + 2 * mod(m.id, 3)::int END,
       m.id <> 19,                                          -- merchant 19 paused its program
       CASE WHEN m.id = 20 THEN p.t - interval '3 days'     -- merchant 20 launched 3 days ago
            ELSE m.created_at + interval '5 days' END
FROM merchants AS m
CROSS JOIN demo_params AS p;

-- ---------------------------------------------------------------------------------------
-- Cards: a plan per card (enrolment, visit rhythm, drop-out), then visits and transactions
-- ---------------------------------------------------------------------------------------

-- Enrolments of the last 7 days per merchant (the low_enrollment story), and older cards
-- over the last 12 months, more of them recently (the platform grows).
CREATE TEMP TABLE demo_cards ON COMMIT DROP AS
WITH recent_quota AS (
    SELECT m.id AS merchant_id,
           CASE WHEN m.id = 7  THEN CASE WHEN p.incidents THEN 2 ELSE 9 END
                WHEN m.id = 13 THEN CASE WHEN p.incidents THEN 0 ELSE 7 END
                WHEN m.id = 19 THEN 0
                WHEN m.id = 20 THEN 14
                ELSE 6 + floor(pg_temp.u(m.id, 11) * 10)::int END AS quota
    FROM merchants AS m
    CROSS JOIN demo_params AS p
),
recent AS (
    SELECT q.merchant_id,
           p.t - (CASE WHEN q.merchant_id = 20 THEN interval '3 days' ELSE interval '7 days' END)
                 * pg_temp.u(q.merchant_id * 1000 + i, 12) AS enrolled_at
    FROM recent_quota AS q
    CROSS JOIN demo_params AS p
    CROSS JOIN generate_series(1, q.quota) AS i
),
history_merchants AS (
    SELECT array_agg(id ORDER BY id) AS ids FROM merchants WHERE id <> 20
),
history AS (
    SELECT h.ids[1 + floor(pg_temp.u(n, 13) * cardinality(h.ids))::int] AS merchant_id,
           p.t - interval '7 days' - interval '357 days' * power(pg_temp.u(n, 14), 1.3) AS enrolled_at
    FROM demo_params AS p
    CROSS JOIN history_merchants AS h
    CROSS JOIN generate_series(1, greatest(0, p.n_cards - (SELECT sum(quota) FROM recent_quota))::int) AS n
),
cards AS (
    SELECT row_number() OVER (ORDER BY enrolled_at, merchant_id) AS card_id, merchant_id, enrolled_at
    FROM (SELECT * FROM recent UNION ALL SELECT * FROM history) AS all_cards
)
SELECT c.card_id,
       c.merchant_id,
       c.enrolled_at,
       pr.program_type,
       pr.stamps_target,
       -- 5 percent enrol online (no store)
       CASE WHEN pg_temp.u(c.card_id, 15) < 0.05 THEN NULL
            ELSE 2 * c.merchant_id - 1 + floor(pg_temp.u(c.card_id, 16) * 2)::int END AS enrolled_store_id,
       pg_temp.u(c.card_id, 20) < 0.08 AS never_used,
       make_interval(days => 5) + interval '25 days' * pg_temp.u(c.card_id, 21) AS gap,
       CASE WHEN pg_temp.u(c.card_id, 22) < CASE WHEN c.enrolled_at > p.t - interval '200 days'
                                                  AND c.enrolled_at <= p.t - interval '60 days'
                                                 THEN p.p_drop_summer ELSE p.p_drop END
            THEN c.enrolled_at + interval '3 days' + interval '72 days' * pg_temp.u(c.card_id, 23)
            WHEN c.enrolled_at <= p.t - interval '90 days' AND pg_temp.u(c.card_id, 29) < p.p_lapse
            THEN p.t - interval '90 days' + interval '60 days' * pg_temp.u(c.card_id, 23)
            ELSE p.t END AS active_until,
       pg_temp.u(c.card_id, 24) AS fate,                    -- deactivation / anonymization
       pg_temp.u(c.card_id, 25) AS google_draw,
       pg_temp.u(c.card_id, 26) AS apple_draw
FROM cards AS c
JOIN loyalty_programs AS pr ON pr.merchant_id = c.merchant_id
CROSS JOIN demo_params AS p;

-- Visits: the first a minute after enrolment, then every `gap` (+/- 25 percent) until
-- the member drops out or T.
CREATE TEMP TABLE demo_visits ON COMMIT DROP AS
WITH raw AS (
    SELECT c.card_id, c.merchant_id, c.program_type, c.stamps_target, c.enrolled_store_id, v.i,
           c.enrolled_at + interval '1 minute' + v.i * c.gap
               + CASE WHEN v.i > 0 THEN (pg_temp.u(c.card_id * 1000 + v.i, 30) - 0.5) * 0.5 * c.gap
                      ELSE interval '0' END AS at,
           c.active_until
    FROM demo_cards AS c
    CROSS JOIN LATERAL generate_series(
        0,
        CASE WHEN c.never_used THEN -1
             ELSE floor(extract(epoch FROM c.active_until - c.enrolled_at) / extract(epoch FROM c.gap))::int + 1 END
    ) AS v (i)
),
kept AS (
    SELECT r.* FROM raw AS r CROSS JOIN demo_params AS p
    WHERE r.at <= least(r.active_until, p.t)
),
priced AS (
    SELECT k.*,
           5 * (2 + floor(pg_temp.u(k.card_id * 1000 + k.i, 31) * 19)::int) AS earn
    FROM kept AS k
)
SELECT pr.card_id, pr.merchant_id, pr.program_type, pr.stamps_target, pr.i, pr.at, pr.earn,
       -- 15 percent of visits at the merchant's other store
       CASE WHEN pr.enrolled_store_id IS NULL THEN 2 * pr.merchant_id - 1
            WHEN pg_temp.u(pr.card_id * 1000 + pr.i, 32) < 0.15
                THEN CASE WHEN pr.enrolled_store_id = 2 * pr.merchant_id THEN 2 * pr.merchant_id - 1
                          ELSE 2 * pr.merchant_id END
            ELSE pr.enrolled_store_id END AS store_id,
       -- points members redeem on every 4th visit part of what they earned since
       CASE WHEN pr.program_type = 'points' AND mod(pr.i + 1, 4) = 0
            THEN floor((0.45 + 0.45 * pg_temp.u(pr.card_id * 1000 + pr.i, 33))
                       * sum(pr.earn) OVER (PARTITION BY pr.card_id ORDER BY pr.i ROWS 3 PRECEDING))::int
            ELSE 0 END AS redeem,
       pg_temp.u(pr.card_id * 1000 + pr.i, 34) < 0.02 AS mistaken,  -- a duplicate, voided
       pg_temp.u(pr.card_id * 1000 + pr.i, 35) < 0.01 AS adjusted   -- a goodwill adjustment
FROM priced AS pr;

CREATE TEMP TABLE demo_tx ON COMMIT DROP AS
SELECT v.card_id, v.merchant_id, v.store_id, x.kind, x.stamps, x.points, x.at AS created_at
FROM demo_visits AS v
CROSS JOIN LATERAL (VALUES
    ('stamp_add',     1,                 0,        v.at,                        v.program_type = 'stamps'),
    ('stamp_add',     1,                 0,        v.at + interval '20 seconds', v.program_type = 'stamps' AND v.mistaken),
    ('stamp_void',   -1,                 0,        v.at + interval '40 seconds', v.program_type = 'stamps' AND v.mistaken),
    ('stamp_redeem', -v.stamps_target,   0,        v.at + interval '1 minute',  v.program_type = 'stamps' AND mod(v.i + 1, v.stamps_target) = 0),
    ('points_earn',   0,                 v.earn,   v.at,                        v.program_type = 'points'),
    ('points_earn',   0,                 v.earn,   v.at + interval '20 seconds', v.program_type = 'points' AND v.mistaken),
    ('points_void',   0,                -v.earn,   v.at + interval '40 seconds', v.program_type = 'points' AND v.mistaken),
    ('points_redeem', 0,                -v.redeem, v.at + interval '1 minute',  v.program_type = 'points' AND v.redeem > 0),
    ('points_adjust', 0,                 25,       v.at + interval '10 minutes', v.program_type = 'points' AND v.adjusted)
) AS x (kind, stamps, points, at, wanted)
CROSS JOIN demo_params AS p
WHERE x.wanted AND x.at <= p.t;

-- Points expire after 180 days without a visit, taken by the first successful daily run
-- of loyalty.expire_points (runs at T - 7 h - k days) after that.
INSERT INTO demo_tx (card_id, merchant_id, store_id, kind, stamps, points, created_at)
SELECT b.card_id, b.merchant_id, NULL, 'points_expire', 0, -b.balance, b.expire_run
FROM (
    SELECT tx.card_id, tx.merchant_id, sum(tx.points) AS balance,
           p.t - interval '7 hours' + interval '4 minutes'
               - make_interval(days => floor(extract(epoch FROM (p.t - interval '7 hours')
                                                 - (max(tx.created_at) + interval '180 days')) / 86400)::int)
               AS expire_run,
           p.expire_last_ok
    FROM demo_tx AS tx
    CROSS JOIN demo_params AS p
    GROUP BY tx.card_id, tx.merchant_id, p.t, p.expire_last_ok
) AS b
WHERE b.balance > 0
  AND b.expire_run <= b.expire_last_ok
  AND EXISTS (SELECT 1 FROM demo_cards AS c       -- points cards that stay active
              WHERE c.card_id = b.card_id AND c.program_type = 'points' AND c.fate >= 0.05);

-- The cards, in the state the application keeps (balances and last activity from the
-- transactions). About 5 percent of the lapsed members deactivated, a third of those
-- anonymized (GDPR).
INSERT INTO loyalty_cards (id, program_id, merchant_id, enrolled_store_id, customer_email, is_active,
                           enrolled_at, deactivated_at, anonymized_at, stamp_count, points_balance,
                           last_activity_at, google_object_id, apple_serial_number)
SELECT c.card_id,
       c.merchant_id,
       c.merchant_id,
       c.enrolled_store_id,
       CASE WHEN s.anonymized THEN NULL ELSE 'customer' || c.card_id || '@example.com' END,
       NOT s.deactivated,
       c.enrolled_at,
       s.deactivated_at,
       CASE WHEN s.anonymized THEN s.deactivated_at END,
       coalesce(a.stamps, 0),
       coalesce(a.points, 0),
       a.last_activity_at,
       CASE WHEN c.google_draw < 0.38 AND NOT s.anonymized THEN '3388000000022195321.loyalty-card-' || c.card_id END,
       CASE WHEN c.apple_draw < 0.27 AND NOT s.anonymized THEN upper(pg_temp.fake_uuid(c.card_id, 27)) END
FROM demo_cards AS c
CROSS JOIN demo_params AS p
LEFT JOIN (
    SELECT card_id,
           sum(stamps) AS stamps,
           sum(points) AS points,
           max(created_at) FILTER (WHERE kind IN ('stamp_add', 'stamp_redeem', 'points_earn', 'points_redeem'))
               AS last_activity_at
    FROM demo_tx
    GROUP BY card_id
) AS a ON a.card_id = c.card_id
CROSS JOIN LATERAL (
    -- only members not seen for 50 days are deactivated, 5 to 45 days after their last visit
    SELECT coalesce(a.last_activity_at, c.enrolled_at) < p.t - interval '50 days' AS lapsed
) AS l
CROSS JOIN LATERAL (
    SELECT l.lapsed AND c.fate < 0.05 AS deactivated,
           l.lapsed AND c.fate < 0.015 AS anonymized,
           CASE WHEN l.lapsed AND c.fate < 0.05
                THEN coalesce(a.last_activity_at, c.enrolled_at) + interval '5 days'
                     + interval '40 days' * pg_temp.u(c.card_id, 28) END AS deactivated_at
) AS s;

INSERT INTO loyalty_transactions (card_id, merchant_id, store_id, kind, stamps, points, created_at)
SELECT card_id, merchant_id, store_id, kind, stamps, points, created_at
FROM demo_tx
ORDER BY created_at, card_id;

-- store_transactions_drop: the two stores of merchant 1 scan at the till every day for the
-- 5 weeks before T, 17 hours a day around T's hour of the day (closed from 12 to 19 hours
-- after it, so that any T is in opening hours): 6 and 10 stamps an hour (half as many again
-- 3 to 5 hours after T's hour, 0.75 to 1.25 times that from hour to hour), on the shop's
-- own counter card. In an incident store 2's scanner stopped 2 hours before T.
INSERT INTO loyalty_cards (id, program_id, merchant_id, enrolled_store_id, is_active, enrolled_at)
SELECT 900001, 1, 1, 1, true, p.t - interval '400 days'
FROM demo_params AS p;

INSERT INTO loyalty_transactions (card_id, merchant_id, store_id, kind, stamps, points, created_at)
SELECT 900001, 1, s.store_id, 'stamp_add', 1, 0, h.hour + (i - 0.5) * interval '1 hour' / n.per_hour
FROM demo_params AS p
CROSS JOIN (VALUES (1, 6), (2, 10)) AS s (store_id, base)
CROSS JOIN generate_series(date_trunc('hour', p.t) - interval '35 days', date_trunc('hour', p.t) - interval '1 hour',
                           interval '1 hour') AS h (hour)
CROSS JOIN LATERAL (
    SELECT mod((extract(hour FROM h.hour) - extract(hour FROM p.t))::int + 24, 24) AS after_t_hour
) AS d
CROSS JOIN LATERAL (
    SELECT round(s.base * CASE WHEN d.after_t_hour BETWEEN 3 AND 5 THEN 1.5 ELSE 1 END
                 * (0.75 + 0.5 * pg_temp.u(extract(epoch FROM h.hour)::bigint * 10 + s.store_id, 40)))::int AS per_hour
) AS n
CROSS JOIN generate_series(1, n.per_hour) AS i
WHERE d.after_t_hour NOT BETWEEN 12 AND 18
  AND NOT (p.incidents AND s.store_id = 2 AND h.hour >= date_trunc('hour', p.t) - interval '2 hours');

UPDATE loyalty_cards AS c  -- its balance and last activity, as the application keeps them
SET stamp_count = a.stamps, last_activity_at = a.last
FROM (SELECT sum(stamps) AS stamps, max(created_at) AS last FROM loyalty_transactions WHERE card_id = 900001) AS a
WHERE c.id = 900001;

-- ---------------------------------------------------------------------------------------
-- E-mails
-- ---------------------------------------------------------------------------------------

-- Loyalty e-mails: a welcome per card, a wallet pass, rewards, expiry warnings, and the
-- reminders sent over the last 24 hours. Statuses by hash; the last 24 hours are fixed
-- further down.
INSERT INTO email_logs (template_code, recipient, status, merchant_id, created_at, sent_at, error_message)
WITH loyalty AS (
    SELECT 'loyalty_welcome' AS template_code, card_id, merchant_id, enrolled_at + interval '1 minute' AS created_at
    FROM demo_cards
    UNION ALL
    SELECT 'loyalty_wallet_pass_ready', card_id, merchant_id, enrolled_at + interval '5 minutes'
    FROM demo_cards WHERE google_draw < 0.38 OR apple_draw < 0.27
    UNION ALL
    SELECT CASE kind WHEN 'stamp_redeem' THEN 'loyalty_reward_unlocked' ELSE 'loyalty_points_redeemed' END,
           card_id, merchant_id, created_at + interval '2 minutes'
    FROM demo_tx WHERE kind IN ('stamp_redeem', 'points_redeem')
    UNION ALL
    SELECT 'loyalty_points_expiring', card_id, merchant_id, created_at - interval '14 days'
    FROM demo_tx WHERE kind = 'points_expire'
    UNION ALL
    SELECT (ARRAY['loyalty_reward_reminder', 'loyalty_birthday_reward', 'loyalty_points_expiring'])[1 + mod(n, 3)],
           c.card_id, c.merchant_id, p.t - interval '24 hours' * pg_temp.u(n, 40)
    FROM demo_params AS p
    CROSS JOIN generate_series(1, round(360 * p.scale)::int) AS n
    JOIN demo_cards AS c ON c.card_id = 1 + floor(pg_temp.u(n, 41) * p.n_cards)::int
                        AND c.enrolled_at < p.t - interval '24 hours'
    UNION ALL   -- a few just created, still in the queue at T
    SELECT 'loyalty_reward_reminder', c.card_id, c.merchant_id, p.t - interval '9 minutes' * pg_temp.u(n, 42)
    FROM demo_params AS p
    CROSS JOIN generate_series(1, greatest(3, round(8 * p.scale))::int) AS n
    JOIN demo_cards AS c ON c.card_id = 1 + floor(pg_temp.u(n, 43) * p.n_cards)::int
                        AND c.enrolled_at < p.t - interval '24 hours'
),
rolled AS (
    SELECT l.*, pg_temp.u(l.card_id * 100 + length(l.template_code), mod(extract(epoch FROM l.created_at)::bigint, 1000003)::int) AS h
    FROM loyalty AS l
    CROSS JOIN demo_params AS p
    WHERE l.created_at <= p.t
)
SELECT r.template_code,
       'customer' || r.card_id || '@example.com',
       st.status,
       r.merchant_id,
       r.created_at,
       CASE WHEN st.status NOT IN ('queued', 'failed') THEN r.created_at + interval '3 seconds' + interval '50 seconds' * r.h END,
       CASE st.status
           WHEN 'failed'  THEN 'SMTPServerDisconnected: Connection unexpectedly closed'
           WHEN 'bounced' THEN '550 5.1.1 Recipient address rejected: user unknown'
       END
FROM rolled AS r
CROSS JOIN LATERAL (
    SELECT CASE WHEN r.h < 0.006 THEN 'failed'
                WHEN r.h < 0.03  THEN 'bounced'
                WHEN r.h < 0.10  THEN 'sent'
                WHEN r.h < 0.55  THEN 'delivered'
                WHEN r.h < 0.85  THEN 'opened'
                ELSE 'clicked' END AS status
) AS st;

-- Other e-mails of the platform (out of the loyalty checks' scope): over the year, and
-- a newsletter in the last 24 hours that the provider throttled (5 percent failed).
INSERT INTO email_logs (template_code, recipient, status, merchant_id, created_at, sent_at, error_message)
WITH other AS (
    SELECT (ARRAY['order_confirmation', 'password_reset', 'account_verification', 'invoice_monthly'])[1 + mod(n, 4)]
               AS template_code,
           n,
           p.t - interval '365 days' * pg_temp.u(n, 50) AS created_at,
           pg_temp.u(n, 51) AS h
    FROM demo_params AS p
    CROSS JOIN generate_series(1, round(2500 * p.scale)::int) AS n
    UNION ALL
    SELECT 'marketing_newsletter', 100000000 + n, p.t - interval '20 hours' - interval '30 minutes' * pg_temp.u(n, 52),
           CASE WHEN mod(n, 20) = 0 THEN 0.0 ELSE 0.5 END
    FROM demo_params AS p
    CROSS JOIN generate_series(1, round(400 * p.scale)::int) AS n
)
SELECT o.template_code,
       'user' || mod(o.n, 5000) || '@example.com',
       CASE WHEN o.h < 0.01 THEN 'failed' WHEN o.h < 0.04 THEN 'bounced' WHEN o.h < 0.6 THEN 'delivered' ELSE 'opened' END,
       CASE WHEN o.template_code = 'marketing_newsletter' THEN NULL ELSE 1 + mod(o.n, 20) END,
       o.created_at,
       CASE WHEN o.h >= 0.01 THEN o.created_at + interval '4 seconds' END,
       CASE WHEN o.h < 0.01 THEN '421 4.7.0 Try again later, closing connection (rate limited)'
            WHEN o.h < 0.04 THEN '550 5.1.1 Recipient address rejected: user unknown' END
FROM other AS o;

-- The last 24 hours of loyalty e-mails: the last 10 minutes still queued; of the rest,
-- every 33rd failed in an incident (SMTP relay timing out), every 400th otherwise.
WITH recent AS (
    SELECT e.id,
           e.created_at > p.t - interval '10 minutes' AS queued,
           row_number() OVER (PARTITION BY e.created_at > p.t - interval '10 minutes' ORDER BY e.created_at, e.id) AS rn,
           p.incidents
    FROM email_logs AS e
    CROSS JOIN demo_params AS p
    WHERE e.created_at > p.t - interval '24 hours'
      AND left(e.template_code, 8) = 'loyalty_'
),
decided AS (
    SELECT id,
           CASE WHEN queued THEN 'queued'
                WHEN mod(rn, CASE WHEN incidents THEN 33 ELSE 400 END) = 0 THEN 'failed'
                ELSE NULL END AS forced
    FROM recent
)
UPDATE email_logs AS e
SET status = coalesce(d.forced, CASE WHEN e.status = 'failed' THEN 'delivered' ELSE e.status END),
    sent_at = CASE WHEN d.forced IS NOT NULL THEN NULL
                   WHEN e.status = 'failed' THEN e.created_at + interval '5 seconds'
                   ELSE e.sent_at END,
    error_message = CASE d.forced
                        WHEN 'failed' THEN 'SMTPConnectTimeoutError: connection to the SMTP relay timed out after 30 s'
                        WHEN 'queued' THEN NULL
                        ELSE CASE WHEN e.status = 'failed' THEN NULL ELSE e.error_message END END
FROM decided AS d
WHERE e.id = d.id;

-- ---------------------------------------------------------------------------------------
-- Celery: loyalty.expire_points (daily) and loyalty.sync_wallet_passes (every 15 min)
-- ---------------------------------------------------------------------------------------

-- Daily at T - 7 h - k days for a year. About 3 percent failed and were retried an hour
-- later. In an incident the run at T - 7 h and a manual re-run at T - 3 h failed.
INSERT INTO celery_taskmeta (task_id, status, date_done, traceback, name, worker, retries, queue)
SELECT pg_temp.fake_uuid(r.key, 60),
       r.status,
       (r.done AT TIME ZONE 'UTC'),
       CASE WHEN r.status = 'FAILURE' THEN
           E'Traceback (most recent call last):\n'
           || E'  File "/app/app/modules/loyalty/tasks.py", line 142, in expire_points\n'
           || E'    expired = service.expire_due_points(chunk_size=500)\n'
           || E'psycopg2.errors.QueryCanceled: canceling statement due to statement timeout\n' END,
       'loyalty.expire_points',
       'celery@loyalty-worker-' || (1 + mod(r.key, 2)),
       CASE WHEN r.status = 'FAILURE' THEN 3 ELSE 0 END,
       'loyalty'
FROM (
    SELECT k AS key,
           p.t - interval '7 hours' - make_interval(days => k) + interval '3 minutes'
               + interval '3 minutes' * pg_temp.u(k, 61) AS done,
           CASE WHEN k = 0 AND p.incidents THEN 'FAILURE'
                WHEN k > 1 AND pg_temp.u(k, 62) < 0.03 THEN 'FAILURE'
                ELSE 'SUCCESS' END AS status
    FROM demo_params AS p
    CROSS JOIN generate_series(0, 364) AS k
    UNION ALL   -- the retry an hour after a historical failure
    SELECT 100000 + k,
           p.t - interval '6 hours' - make_interval(days => k) + interval '2 minutes',
           'SUCCESS'
    FROM demo_params AS p
    CROSS JOIN generate_series(2, 364) AS k
    WHERE pg_temp.u(k, 62) < 0.03
    UNION ALL   -- the on-call engineer's manual re-run, which failed too
    SELECT 200000, p.t - interval '3 hours', 'FAILURE'
    FROM demo_params AS p
    WHERE p.incidents
) AS r;

-- Sync cycles every 15 minutes for 30 days, starting at T - 2 min - k * 15 min; the
-- cycle k = 0 is still running at T. A few cycles hit Celery's time limit (no run rows).
CREATE TEMP TABLE demo_sync_cycles ON COMMIT DROP AS
SELECT k,
       p.t - interval '2 minutes' - k * interval '15 minutes' AS started_at,
       pg_temp.fake_uuid(k, 70) AS task_id,
       CASE WHEN k = 0 THEN 'STARTED'
            WHEN k > 4 AND pg_temp.u(k, 71) < 0.004 THEN 'FAILURE'
            ELSE 'SUCCESS' END AS status
FROM demo_params AS p
CROSS JOIN generate_series(0, 30 * 96 - 1) AS k;

INSERT INTO celery_taskmeta (task_id, status, date_done, traceback, name, worker, retries, queue)
SELECT c.task_id,
       c.status,
       ((c.started_at + CASE WHEN c.status = 'STARTED' THEN interval '1 second'
                             WHEN c.status = 'FAILURE' THEN interval '10 minutes'
                             WHEN c.k BETWEEN 1 AND 3 THEN interval '7 minutes'   -- slow Google API
                             ELSE interval '2 minutes' END) AT TIME ZONE 'UTC'),
       CASE WHEN c.status = 'FAILURE' THEN
           E'Traceback (most recent call last):\n'
           || E'  File "/app/app/modules/loyalty/tasks.py", line 201, in sync_wallet_passes\n'
           || E'celery.exceptions.SoftTimeLimitExceeded: SoftTimeLimitExceeded()\n' END,
       'loyalty.sync_wallet_passes',
       'celery@loyalty-worker-' || (1 + mod(c.k, 2)),
       0,
       'wallet'
FROM demo_sync_cycles AS c;

-- ---------------------------------------------------------------------------------------
-- Wallet sync runs (google and apple per cycle)
-- ---------------------------------------------------------------------------------------

CREATE TEMP TABLE demo_wallet ON COMMIT DROP AS
SELECT 'google' AS provider, id AS card_id, row_number() OVER (ORDER BY id) AS rn
FROM loyalty_cards WHERE google_object_id IS NOT NULL
UNION ALL
SELECT 'apple', id, row_number() OVER (ORDER BY id)
FROM loyalty_cards WHERE apple_serial_number IS NOT NULL;

CREATE INDEX ON demo_wallet (provider, rn);
ANALYZE demo_wallet;

INSERT INTO loyalty_wallet_sync_runs (provider, celery_task_id, started_at, finished_at, cards_total,
                                      cards_failed, failed_card_ids)
WITH providers AS MATERIALIZED (
    SELECT pv.provider, pv.salt, count(w.card_id) AS wallet_cards
    FROM (VALUES ('google', 80), ('apple', 90)) AS pv (provider, salt)
    LEFT JOIN demo_wallet AS w ON w.provider = pv.provider
    GROUP BY pv.provider, pv.salt
),
sized AS (
    SELECT c.k, c.task_id, c.started_at, pv.provider, pv.salt, pv.wallet_cards,
           p.incidents,
           -- quiet nights: between 01:00 and 05:00 UTC most runs have nothing to sync
           CASE WHEN extract(hour FROM c.started_at) BETWEEN 1 AND 4 AND pg_temp.u(c.k, pv.salt) < 0.6 AND c.k > 3
                THEN 0
                ELSE 20 + floor(130 * pg_temp.u(c.k, pv.salt + 1))::int END AS wanted
    FROM demo_sync_cycles AS c
    CROSS JOIN providers AS pv
    CROSS JOIN demo_params AS p
    WHERE c.status <> 'FAILURE'
),
rated AS (
    SELECT s.*,
           least(s.wanted, s.wallet_cards)::int AS cards_total,
           CASE WHEN s.provider = 'google' AND s.incidents AND s.k = 1 THEN 0.80
                WHEN s.provider = 'google' AND s.incidents AND s.k = 2 THEN 0.70
                WHEN s.provider = 'google' AND s.incidents AND s.k = 3 THEN 0.30
                ELSE 0.02 * pg_temp.u(s.k, s.salt + 2) END AS failure_share,
           CASE WHEN s.provider = 'google' AND s.incidents AND s.k BETWEEN 1 AND 3
                THEN interval '4 minutes' + interval '2 minutes' * pg_temp.u(s.k, s.salt + 3)
                ELSE interval '20 seconds' + interval '70 seconds' * pg_temp.u(s.k, s.salt + 3) END AS duration
    FROM sized AS s
),
failed AS (
    SELECT r.*,
           floor(r.cards_total * r.failure_share)::int AS cards_failed,
           floor(pg_temp.u(r.k, r.salt + 4) * greatest(r.wallet_cards - r.cards_total, 0))::int AS first_rn
    FROM rated AS r
)
SELECT f.provider,
       f.task_id,
       f.started_at + CASE f.provider WHEN 'google' THEN interval '2 seconds' ELSE interval '5 seconds' END,
       CASE WHEN f.k > 0 THEN f.started_at + f.duration END,
       f.cards_total,
       f.cards_failed,
       CASE WHEN f.cards_failed = 0 THEN '{}'::bigint[]
            ELSE ARRAY(SELECT w.card_id FROM demo_wallet AS w
                       WHERE w.provider = f.provider AND w.rn > f.first_rn AND w.rn <= f.first_rn + f.cards_failed
                       ORDER BY w.rn) END
FROM failed AS f
ORDER BY f.started_at, f.provider;

-- ---------------------------------------------------------------------------------------
-- Rate limiter 429s
-- ---------------------------------------------------------------------------------------

-- Background: small bursts (1 to 30 in a minute) at random stores over 7 days, plus the
-- spikes (incidents), a harmless store-less scraper and an old spike of store 25.
INSERT INTO rate_limit_events (store_id, occurred_at, method, path)
WITH bursts AS (
    SELECT 1 + floor(pg_temp.u(n, 90) * (2 * p.n_merchants))::int AS store_id,
           p.t_min - make_interval(mins => 1 + floor(pg_temp.u(n, 91) * (7 * 24 * 60 - 2))::int) AS minute,
           1 + floor(power(pg_temp.u(n, 92), 2) * 30)::int AS events,
           n AS salt
    FROM demo_params AS p
    CROSS JOIN generate_series(1, round(350 * p.scale)::int) AS n
    UNION ALL
    SELECT s.store_id, p.t_min - make_interval(mins => s.minutes_ago), s.events, 0
    FROM demo_params AS p
    CROSS JOIN LATERAL (
        SELECT 3, 26 - i, (ARRAY[40, 95, 130, 160, 187, 175, 150, 142, 120, 104, 60, 30])[i]
        FROM generate_series(1, 12) AS i WHERE p.incidents
        UNION ALL
        SELECT 6, 41 - i, (ARRAY[70, 118, 131, 90, 20])[i]
        FROM generate_series(1, 5) AS i WHERE p.incidents
        UNION ALL
        SELECT 3, 26 - i, (ARRAY[12, 20, 17])[i]
        FROM generate_series(1, 3) AS i WHERE NOT p.incidents
        UNION ALL
        SELECT 6, 41 - i, (ARRAY[9, 14])[i]
        FROM generate_series(1, 2) AS i WHERE NOT p.incidents
        UNION ALL
        SELECT 25, 2 * 24 * 60 + 180 - i, (ARRAY[180, 250, 240, 160, 60])[i]
        FROM generate_series(1, 5) AS i
    ) AS s (store_id, minutes_ago, events)
    UNION ALL
    SELECT NULL, p.t_min - interval '5 minutes', 150, -1
    FROM demo_params AS p
)
SELECT b.store_id,
       b.minute + make_interval(secs => 59.0 * e / b.events),
       CASE WHEN b.store_id IS NULL THEN 'GET' WHEN mod(e, 3) = 2 THEN 'GET' ELSE 'POST' END,
       CASE WHEN b.store_id IS NULL THEN '/api/v1/loyalty/public/programs'
            ELSE '/api/v1/loyalty/stores/' || b.store_id
                 || (ARRAY['/stamps', '/points', '/cards/lookup'])[1 + mod(e, 3)] END
FROM bursts AS b
CROSS JOIN LATERAL generate_series(0, b.events - 1) AS e
ORDER BY 2;

ANALYZE merchants, stores, loyalty_programs, loyalty_cards, loyalty_transactions, email_logs,
        celery_taskmeta, loyalty_wallet_sync_runs, rate_limit_events;
