"""The airflow DAG of the loyalty P2 checks, built from include/checks.yaml (see loyalty_checks.factory)."""

import sys
from pathlib import Path

try:
    from loyalty_checks.factory import build_dag
except ModuleNotFoundError:  # plugins/ is not Airflow's plugins folder: use the package's own
    sys.path.append(str(Path(__file__).resolve().parents[1] / "plugins"))
    from loyalty_checks.factory import build_dag

dag = build_dag("P2")
