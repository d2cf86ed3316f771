"""Run one DAG with `dag.test()` and print what happened as JSON (executed by the Airflow venv's Python).

    python airflow_runner.py parse DAG_FOLDER
    python airflow_runner.py test DAG_FOLDER DAG_ID

`parse` prints {"dags": {dag_id: [task ids]}, "import_errors": {...}}.
`test` prints {"state": ..., "tasks": {task_id: {"state": ..., "xcom": ...}}} on its last line.
Not a test module: pytest runs it in Airflow's own environment (see test_airflow.py).
"""

from __future__ import annotations

import json
import sys


def dag_bag(folder: str):
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow 3
    except ImportError:  # pragma: no cover - Airflow 2
        from airflow.models.dagbag import DagBag
    return DagBag(dag_folder=folder)


def parse(folder: str) -> dict:
    bag = dag_bag(folder)
    return {
        "dags": {dag_id: sorted(t.task_id for t in dag.tasks) for dag_id, dag in bag.dags.items()},
        "import_errors": {str(path): str(error) for path, error in bag.import_errors.items()},
    }


def run(folder: str, dag_id: str) -> dict:
    bag = dag_bag(folder)
    if dag_id not in bag.dags:
        return {"state": "not parsed", "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()}}
    dag_run = bag.dags[dag_id].test()
    tasks = {}
    for instance in dag_run.get_task_instances():
        tasks[instance.task_id] = {"state": str(instance.state), "xcom": xcom_value(dag_run, instance.task_id)}
    return {"state": str(dag_run.state), "tasks": tasks}


def xcom_value(dag_run, task_id: str):
    """The task's return_value XCom, as stored (Airflow 3 keeps it JSON-serialized)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(XComModel).filter(
            XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id,
            XComModel.task_id == task_id, XComModel.key == "return_value",
        ).one_or_none()
        if row is None:
            return None
        value = row.value
    if isinstance(value, (bytes, str)):
        try:
            value = json.loads(value)
        except ValueError:
            pass
    return value


def main(argv: list[str]) -> int:
    if argv[:1] == ["parse"] and len(argv) == 2:
        result = parse(argv[1])
    elif argv[:1] == ["test"] and len(argv) == 3:
        result = run(argv[1], argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
