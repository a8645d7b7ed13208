-- Digest metric email_status_distribution: loyalty e-mails (template_code starting with
-- 'loyalty_') created in (T - window, T], counted per status, most first.
--   label status, value e-mails
-- Digest metrics get no catalog params, so the pattern is literal: the percent sign is
-- doubled for the parameter binding. Never reads recipient.
-- Reads: email_logs_created_at_idx.
WITH loyalty_emails AS (
    SELECT e.status
    FROM email_logs AS e
    WHERE e.created_at > %(t)s::timestamptz - %(window)s
      AND e.created_at <= %(t)s::timestamptz
      AND e.template_code LIKE 'loyalty\_%%'
)
SELECT status                 AS label,
       count(*)::numeric      AS value
FROM loyalty_emails
GROUP BY status
ORDER BY count(*) DESC, status;
