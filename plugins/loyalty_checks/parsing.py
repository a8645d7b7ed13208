"""What one parse of a check DAG file builds.

The dag-processor (and `dags test`, a DagBag) builds every task. A task process parses
the DAG file again before it runs its one task (Airflow's task runner); there, Airflow's
parsing context names that task, and the factory builds it alone (in its group), so the
cost of starting a task does not grow with the number of checks. Nothing a task does at
run time needs its neighbours: XComs are pulled by task id, measure skips notify tasks by
id, and the scheduler reads the whole DAG from its serialized copy.
"""

from __future__ import annotations


def running_task(dag_id: str) -> str | None:
    """The task id when this parse is a task process's of `dag_id` (Airflow's parsing
    context), else None (the dag-processor, `dags test`, a DagBag)."""
    from airflow.sdk import get_parsing_context

    running = get_parsing_context()
    return running.task_id if running.dag_id == dag_id else None


def running_dag() -> str | None:
    """The DAG id of Airflow's parsing context: set in a task process, None elsewhere."""
    from airflow.sdk import get_parsing_context

    return get_parsing_context().dag_id


def in_group(task_id: str | None, group: str) -> bool:
    """Build this check's group? All of them, except in a task process: only the running task's."""
    return task_id is None or task_id.startswith(f"{group}.")


def wanted(task_id: str | None, group: str | None, name: str) -> bool:
    """Build this task? Every task, except in a task process: only the running one."""
    return task_id is None or task_id == (f"{group}.{name}" if group else name)


def build(makers: dict, edges: list[tuple[str, str]], task_id: str | None, group: str | None = None) -> dict:
    """Make the wanted tasks of `makers` (name -> factory) and wire `edges` between those made."""
    made = {name: make() for name, make in makers.items() if wanted(task_id, group, name)}
    for upstream, downstream in edges:
        if upstream in made and downstream in made:
            made[upstream] >> made[downstream]
    return made
