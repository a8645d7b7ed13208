-- slack_actions_stale (P1, runs on loyalty_monitoring_db, only where the connection
-- slack_loyalty_socket exists): the Slack actions listener (python -m
-- loyalty_checks.slack_actions) records a heartbeat at least every minute; minutes from
-- its latest heartbeat to T. With no heartbeat at all, the listener never ran: no data,
-- which fires (the connection says it should run).
--   value    minutes since the latest heartbeat (NULL: none yet)
SELECT extract(epoch FROM %(t)s - max(beat_at)) / 60 AS value,
       max(beat_at)                                   AS latest_heartbeat
FROM loyalty_monitoring.heartbeats
WHERE component = %(component)s;
