-- email_failure_rate (P1): share of the loyalty e-mails (template_code LIKE
-- the template_pattern parameter, loyalty\_ prefix) created in (T - window, T] that failed:
--   failed / (every status but 'queued')
--   no data NULL when none of them left the queue (does not fire)
-- Never reads recipient. Reads: email_logs_created_at_idx (the window’s e-mails).
WITH loyalty_emails AS (
    SELECT e.template_code, e.status
    FROM email_logs AS e
    WHERE e.created_at > %(t)s::timestamptz - %(window)s
      AND e.created_at <= %(t)s::timestamptz
      AND e.template_code LIKE %(template_pattern)s
),
counts AS (
    SELECT count(*) FILTER (WHERE status = 'failed')   AS failed,
           count(*) FILTER (WHERE status <> 'queued')  AS attempted,
           count(*) FILTER (WHERE status = 'queued')   AS queued
    FROM loyalty_emails
),
worst_template AS (
    SELECT template_code, count(*) AS failed
    FROM loyalty_emails
    WHERE status = 'failed'
    GROUP BY template_code
    ORDER BY failed DESC, template_code
    LIMIT 1
)
SELECT CASE WHEN c.attempted > 0 THEN c.failed::numeric / c.attempted END AS value,
       c.failed,
       c.attempted,
       c.queued,
       (SELECT template_code FROM worst_template)                                  AS most_failed_template
FROM counts AS c;
