"""The example DAGs under real Airflow, installed in its own cached environment.

The DockerOperator DAG runs with `dag.test()` (SQLite, a temporary
AIRFLOW_HOME) against the DataHub images built in the test namespace and a
real PostgreSQL. The KubernetesPodOperator DAG is parsed by Airflow's DagBag.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from testkit import DH_VERSION

from ingestion_factory.workflows import metadata_file

pytestmark = pytest.mark.airflow

REPO = Path(__file__).resolve().parents[2]
# Resolved from PyPI alone (Airflow's constraint files live on GitHub); Airflow 3.x runs on Python 3.10-3.13.
AIRFLOW_REQUIREMENTS = (
    "apache-airflow==3.3.2",
    "apache-airflow-providers-docker==4.6.1",
    "apache-airflow-providers-cncf-kubernetes==10.25.0",
)
UV_REQUIREMENT = "uv==0.9.30"
VENV = REPO / "build" / "airflow-venv"
RUNNER = Path(__file__).with_name("airflow_runner.py")
DAGS = REPO / "examples" / "airflow"


@pytest.fixture(scope="session")
def airflow_python() -> Path:
    """Python of a virtualenv holding the pinned Airflow; built once, reused while the pins stay the same."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".requirements"
    wanted = "\n".join(AIRFLOW_REQUIREMENTS)
    if python.exists() and stamp.is_file() and stamp.read_text() == wanted:
        return python
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(VENV)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", UV_REQUIREMENT],
        [str(VENV / "bin" / "uv"), "pip", "install", "--quiet", "--python", str(python), *AIRFLOW_REQUIREMENTS],
    ]
    for step in steps:
        completed = subprocess.run(step, capture_output=True, text=True, timeout=900)
        if completed.returncode != 0:
            pytest.fail(f"installing Airflow failed at `{' '.join(step)}`:\n{completed.stderr[-3000:]}", pytrace=False)
    stamp.write_text(wanted)
    return python


@pytest.fixture
def airflow_env(airflow_python, tmp_path) -> dict:
    """A fresh AIRFLOW_HOME with a migrated SQLite database."""
    home = tmp_path / "airflow-home"
    home.mkdir()
    env = dict(os.environ, AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}")
    env.pop("PYTHONPATH", None)  # Airflow's environment only, not the tool's
    migrate = subprocess.run([str(airflow_python.parent / "airflow"), "db", "migrate"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    return env


def airflow(python: Path, env: dict, *args: str, timeout: int = 600) -> tuple[dict, str]:
    completed = subprocess.run([str(python), str(RUNNER), *args], env=env, capture_output=True, text=True,
                               timeout=timeout)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    return json.loads(completed.stdout.strip().splitlines()[-1]), output


def secret_recipe(directory: Path, postgres, password: str, output: str) -> Path:
    """A PostgreSQL recipe holding the password, as an operator would put it on the worker."""
    directory.mkdir(mode=0o700)
    recipe = {
        "source": {"type": "postgres", "config": {
            "host_port": f"{postgres.host}:{postgres.port}", "database": postgres.database,
            "username": postgres.user, "password": password, "include_views": True}},
        "sink": {"type": "file", "config": {"filename": f"/opt/operator/output/{output}"}},
    }
    path = directory / "datahub-postgres.yml"
    path.write_text(yaml.safe_dump(recipe))
    path.chmod(0o644)  # read by the image's user; the directory keeps everyone else out
    return path


def dag_env(env: dict, project, recipe: Path) -> dict:
    # The images by their framework version's tag, as a site on a given server version picks them.
    return {**env, "INGESTION_IMAGE_NAMESPACE": project.namespace, "INGESTION_FRAMEWORK_VERSION": DH_VERSION,
            # The link, as in the original DAG: Docker mounts what it points at.
            "INGESTION_EXAMPLES": str(project.examples_link), "INGESTION_POSTGRES_CONFIG": str(recipe)}


@pytest.mark.postgres
def test_docker_dag_ingests_postgres_and_pushes_the_summary(airflow_python, airflow_env, run_local_project,
                                                            postgres_database, tmp_path):
    project, db = run_local_project, postgres_database
    output = project.examples / "output" / "airflow-postgres.json"
    output.unlink(missing_ok=True)
    recipe = secret_recipe(tmp_path / "secrets", db, db.password, output.name)

    result, log = airflow(airflow_python, dag_env(airflow_env, project, recipe), "test", str(DAGS), "ingestion_docker")

    assert result["state"] == "success", log[-4000:]
    tasks = result["tasks"]
    assert {name: task["state"] for name, task in tasks.items()} == {
        "ingest_sample_db": "success", "ingest_postgres": "success", "report": "success"}
    summary = tasks["ingest_postgres"]["xcom"]
    assert summary["status"] == "success" and summary["exit_code"] == 0 and summary["connector"] == "postgres"
    assert summary["records"] > 0 and summary["failures"] == 0
    assert tasks["ingest_sample_db"]["xcom"]["records"] > 0
    assert tasks["report"]["xcom"] == {"records": summary["records"] + tasks["ingest_sample_db"]["xcom"]["records"],
                                       "runs": 2}
    written = metadata_file.summarize(output)
    assert set(db.tables) <= set(written.tables)
    assert set(db.views) <= set(written.views)
    assert db.password not in log


@pytest.mark.postgres
def test_docker_dag_fails_the_task_on_a_failing_config(airflow_python, airflow_env, run_local_project,
                                                       postgres_database, tmp_path):
    project, db = run_local_project, postgres_database
    wrong = "wrong-" + db.password
    recipe = secret_recipe(tmp_path / "secrets", db, wrong, "airflow-postgres-failed.json")

    result, log = airflow(airflow_python, dag_env(airflow_env, project, recipe), "test", str(DAGS), "ingestion_docker")

    assert result["state"] == "failed"
    assert result["tasks"]["ingest_postgres"]["state"] == "failed"
    assert result["tasks"]["ingest_postgres"]["xcom"] is None
    assert result["tasks"]["report"]["state"] == "upstream_failed"
    assert result["tasks"]["ingest_sample_db"]["state"] == "success"
    assert '"status": "failed", "exit_code": 1' in log
    assert wrong not in log


def test_kubernetes_dag_is_parsed_by_airflow(airflow_python, airflow_env):
    result, _ = airflow(airflow_python, airflow_env, "parse", str(DAGS))

    assert result["import_errors"] == {}
    assert result["dags"]["ingestion_kubernetes"] == ["ingest_postgres_env", "ingest_postgres_file", "report"]
    assert result["dags"]["ingestion_docker"] == ["ingest_postgres", "ingest_sample_db", "report"]
