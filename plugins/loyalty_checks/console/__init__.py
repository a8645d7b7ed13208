"""The alert console: pages and a JSON API inside the Airflow UI (../../loyalty_console_plugin.py).

app.py builds the FastAPI app (the JSON API of shared/spec/console.md and the pages),
auth.py asks Airflow's auth manager who is asking and what they may do,
loyalty_checks.store (console.py, backtests.py) reads and writes loyalty_monitoring
(read only where it reads, bound parameters), silences go through loyalty_checks.silences, chart.py draws the SVG of a check's history. Nothing here
touches a database or Airflow's configuration when imported.
"""
