"""The Airflow DAGs of the loyalty P0 checks, built from include/checks.yaml (loyalty_checks.factory): one, or its shards."""

import sys
from pathlib import Path

try:
    from loyalty_checks.factory import build_dags
except ModuleNotFoundError:  # plugins/ is not Airflow's plugins folder: use the package's own
    sys.path.append(str(Path(__file__).resolve().parents[1] / "plugins"))
    from loyalty_checks.factory import build_dags

for dag in build_dags("P0"):  # one DAG, or dags.P0.shards of them (dag_id, dag_id_2, ...)
    globals()[dag.dag_id] = dag
