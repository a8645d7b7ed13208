"""Airflow local settings of the loyalty checks: warm worker parents.

Airflow imports `airflow_local_settings` in every one of its processes (from
$AIRFLOW_HOME/config/, which is on its path). This one makes each long-lived parent
that forks task processes (the scheduler's LocalExecutor workers, a Celery worker's
pool, the dag-processor) import the package and Airflow's DAG bag once, before it
first forks, instead of every task process doing it again (loyalty_checks/warm.py,
docs/deploy.md). A site that has its own airflow_local_settings.py adds these two
lines to it.
"""

__all__: list[str] = []  # defines no cluster policy

from loyalty_checks import warm  # noqa: E402

warm.install()
