"""The airflow DAG that backtests a loyalty check from the UI (see loyalty_checks.backtest_dag)."""

import sys
from pathlib import Path

try:
    from loyalty_checks.backtest_dag import build_backtest_dag
except ModuleNotFoundError:  # plugins/ is not Airflow's plugins folder: use the package's own
    sys.path.append(str(Path(__file__).resolve().parents[1] / "plugins"))
    from loyalty_checks.backtest_dag import build_backtest_dag

dag = build_backtest_dag()
