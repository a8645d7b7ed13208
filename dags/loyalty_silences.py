"""The airflow DAG that silences loyalty checks from the UI (see loyalty_checks.silences)."""

import sys
from pathlib import Path

try:
    from loyalty_checks.factory import build_silences_dag
except ModuleNotFoundError:  # plugins/ is not Airflow's plugins folder: use the package's own
    sys.path.append(str(Path(__file__).resolve().parents[1] / "plugins"))
    from loyalty_checks.factory import build_silences_dag

dag = build_silences_dag()
