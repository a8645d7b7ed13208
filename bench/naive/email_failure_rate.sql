-- Naive email_failure_rate: the window written as an age (T - created_at < window), so
-- every e-mail ever logged is read. Same columns and values as p1/email_failure_rate.sql.
WITH loyalty_emails AS (
    SELECT e.template_code, e.status
    FROM email_logs AS e
    WHERE %(t)s::timestamptz - e.created_at < %(window)s
      AND %(t)s::timestamptz - e.created_at >= interval '0'
      AND e.template_code LIKE %(template_pattern)s
)
SELECT CASE WHEN count(*) FILTER (WHERE status <> 'queued') > 0
            THEN (count(*) FILTER (WHERE status = 'failed'))::numeric / count(*) FILTER (WHERE status <> 'queued') END
                                                            AS value,
       count(*) FILTER (WHERE status = 'failed')            AS failed,
       count(*) FILTER (WHERE status <> 'queued')           AS attempted,
       count(*) FILTER (WHERE status = 'queued')            AS queued,
       (SELECT template_code FROM loyalty_emails WHERE status = 'failed'
        GROUP BY template_code ORDER BY count(*) DESC, template_code LIMIT 1) AS most_failed_template
FROM loyalty_emails;
