"""Metadata ingestion with the connector images, run by Airflow's DockerOperator.

The DockerOperator task of the original connector images, for today's Airflow
(2.10+ and 3.x) and Docker provider (4.x). Two ways to hand a config to
`python main.py`:

* ingest_sample_db: the JSON text in env `config`, the original contract. Fine
  for a config without secrets: Airflow renders `environment` in its UI.
* ingest_postgres: a mounted read-only file named by env `config_file`, for a
  config holding a password. The file never appears in Airflow or
  `docker inspect`. It is read by the image's user (uid 1000): make it that
  user's (`chown 1000 file; chmod 0400 file`), or world-readable inside a
  directory only the Airflow user may enter.

main.py prints a one-line JSON summary as its very last line, which the
operator pushes as the task's XCom; `report` reads both.

Settings are read from the environment when the file is parsed:
  INGESTION_IMAGE_NAMESPACE  image namespace (default: openmetadata)
  INGESTION_FRAMEWORK_VERSION  the framework version the images are for, which must match your
                             OpenMetadata (or DataHub) server's: each supported version has its own images,
                             tagged with it (2.0.7.0, 1.13.6.3, ...; default: latest, the factory's default)
  INGESTION_IMAGE_TAG        image tag, when not the framework version (default: that version, else latest)
  INGESTION_EXAMPLES         host folder mounted at /opt/operator (default: the
                             /tmp/openmetadata/examples link `inv run-local` creates)
  INGESTION_POSTGRES_CONFIG  host path of the PostgreSQL recipe holding the password
                             (default: /etc/ingestion/datahub-postgres.yml)
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta

from airflow.providers.docker.operators.docker import DockerOperator
from docker.types import Mount

try:  # Airflow 3
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2.10+
    from airflow import DAG
    from airflow.decorators import task

NAMESPACE = os.environ.get("INGESTION_IMAGE_NAMESPACE", "openmetadata")
# An ingestion image must match its server's version: pick that version's images by their version tag.
FRAMEWORK_VERSION = os.environ.get("INGESTION_FRAMEWORK_VERSION", "")
TAG = os.environ.get("INGESTION_IMAGE_TAG") or FRAMEWORK_VERSION or "latest"
EXAMPLES = os.environ.get("INGESTION_EXAMPLES", "/tmp/openmetadata/examples")
POSTGRES_CONFIG = os.environ.get("INGESTION_POSTGRES_CONFIG", "/etc/ingestion/datahub-postgres.yml")
CONFIG_IN_CONTAINER = "/run/secrets/ingestion-config.yml"

# The embedded demo recipe (examples/datahub/sqlite.yml): no server, no secret.
SAMPLE_DB_RECIPE = {
    "source": {
        "type": "sqlalchemy",
        "config": {
            "platform": "sqlite",
            "connect_uri": "sqlite:///file:/opt/operator/sample_db/sample.db?mode=ro&uri=true",
            "include_views": True,
            "include_view_lineage": False,
        },
    },
    "sink": {"type": "file", "config": {"filename": "/opt/operator/output/airflow-sample-db.json"}},
}


def image(connector: str) -> str:
    return f"{NAMESPACE}/ingestion-connector-{connector}:{TAG}"


def ingestion_task(task_id: str, connector: str, environment: dict, mounts: list[Mount]) -> DockerOperator:
    return DockerOperator(
        task_id=task_id,
        image=image(connector),
        command="python main.py",
        environment=environment,
        mounts=[
            # The examples: sample data in, metadata files out (as in the original DAG).
            Mount(source=EXAMPLES, target="/opt/operator", type="bind"),
            *mounts,
        ],
        # No Airflow temp dir: main.py does not use one, and a bind-mounted one
        # fails whenever the worker and the Docker host are different machines.
        mount_tmp_dir=False,
        # Reach the source and servers on this machine as `localhost`.
        network_mode="host",
        # The logs are in the task log already; leave nothing behind on the worker.
        auto_remove="force",
        # Without a TTY the logs stay plain lines, so the last one is exactly the JSON summary.
        tty=False,
        # main.py's exit codes (1 failed, 2 bad config, 3 plugin missing, 143 stopped)
        # are all failures; none means "nothing to do". A wrapper that exits, say, 99
        # for an empty source would set skip_on_exit_code=99 here.
        skip_on_exit_code=None,
        # XCom: the last line of the output, main.py's one-line JSON summary.
        do_xcom_push=True,
        xcom_all=False,
        retries=0,
        execution_timeout=timedelta(hours=2),
    )


with DAG(
    dag_id="ingestion_docker",
    description="Metadata ingestion with the connector images (DockerOperator)",
    schedule="@daily",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["ingestion", "docker"],
) as dag:
    ingest_sample_db = ingestion_task(
        "ingest_sample_db", "datahub-sqlite",
        environment={"config": json.dumps(SAMPLE_DB_RECIPE)},
        mounts=[],
    )
    ingest_postgres = ingestion_task(
        "ingest_postgres", "datahub-postgres",
        environment={"config_file": CONFIG_IN_CONTAINER},
        mounts=[Mount(source=POSTGRES_CONFIG, target=CONFIG_IN_CONTAINER, type="bind", read_only=True)],
    )

    @task
    def report(*summaries: str) -> dict:
        """Parse the JSON summaries the ingestion tasks pushed; totals for downstream tasks."""
        parsed = [json.loads(summary) for summary in summaries]
        for summary in parsed:
            print(f"{summary['connector']}: {summary['status']}, {summary['records']} records, "
                  f"{summary['warnings']} warnings, {summary['failures']} failures in {summary['duration_s']}s")
        return {"records": sum(s["records"] for s in parsed), "runs": len(parsed)}

    report(ingest_sample_db.output, ingest_postgres.output)
