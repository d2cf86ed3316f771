"""Metadata ingestion with the connector images, run by Airflow's KubernetesPodOperator.

One pod per run of `python main.py`, its config from a Kubernetes Secret that
Airflow never sees. Create the Secret once, from a recipe holding the password:

    kubectl create secret generic ingestion-postgres-recipe \\
        --from-file=recipe.yml=datahub-postgres.yml

Two ways to hand it over, one per task (a real DAG picks one):

* ingest_postgres_env: the recipe as env `config` (a secretKeyRef: not rendered
  in Airflow, but visible to anyone who may read the pod's environment);
* ingest_postgres_file: the Secret mounted as a volume, named by env
  `config_file`; preferred, and required above 128 KiB.

XCom: KubernetesPodOperator reads /airflow/xcom/return.json from the pod, so
a small shell wrapper copies main.py's last output line (its one-line JSON
summary) there, keeping main.py's exit code.

Settings are read from the environment when the file is parsed:
  INGESTION_K8S_NAMESPACE    namespace of the pods (default: airflow)
  INGESTION_IMAGE_NAMESPACE  image namespace (default: openmetadata)
  INGESTION_FRAMEWORK_VERSION  the framework version the images are for, which must match your
                             OpenMetadata (or DataHub) server's: each supported version has its own images,
                             tagged with it (2.0.7.0, 1.13.6.3, ...; default: latest, the factory's default)
  INGESTION_IMAGE_TAG        image tag, when not the framework version (default: that version, else latest)
  INGESTION_REGISTRY         registry host the cluster pulls from (default: none, Docker Hub)
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.secret import Secret
from kubernetes.client import models as k8s

try:  # Airflow 3
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2.10+
    from airflow import DAG
    from airflow.decorators import task

K8S_NAMESPACE = os.environ.get("INGESTION_K8S_NAMESPACE", "airflow")
REGISTRY = os.environ.get("INGESTION_REGISTRY", "")
NAMESPACE = os.environ.get("INGESTION_IMAGE_NAMESPACE", "openmetadata")
# An ingestion image must match its server's version: pick that version's images by their version tag.
FRAMEWORK_VERSION = os.environ.get("INGESTION_FRAMEWORK_VERSION", "")
TAG = os.environ.get("INGESTION_IMAGE_TAG") or FRAMEWORK_VERSION or "latest"
RECIPE_SECRET = "ingestion-postgres-recipe"
RECIPE_KEY = "recipe.yml"
SECRET_DIR = "/run/secrets/ingestion"

# dumb-init (the image's entrypoint) signals every process of the pod on SIGTERM:
# main.py winds down and prints its summary, while the shell and tee wait for it.
RUN_AND_PUSH_SUMMARY = """
set -o pipefail
trap 'true' TERM
python main.py | (trap '' TERM; exec tee /tmp/ingestion.log)
status=$?
tail -n 1 /tmp/ingestion.log > /airflow/xcom/return.json
exit $status
"""


def image(connector: str) -> str:
    return "/".join(part for part in (REGISTRY, NAMESPACE, f"ingestion-connector-{connector}:{TAG}") if part)


def ingestion_pod(task_id: str, connector: str, **config_delivery) -> KubernetesPodOperator:
    return KubernetesPodOperator(
        task_id=task_id,
        name=task_id.replace("_", "-"),
        namespace=K8S_NAMESPACE,
        image=image(connector),
        cmds=["/opt/venv/bin/dumb-init", "--", "bash", "-c"],
        arguments=[RUN_AND_PUSH_SUMMARY],
        # main.py stops within 6 s of SIGTERM; leave room for the summary and the XCom file.
        termination_grace_period=30,
        # main.py writes the failure reason to /dev/termination-log: `kubectl describe pod` shows it.
        termination_message_policy="FallbackToLogsOnError",
        security_context={"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True},
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": "250m", "memory": "512Mi"}, limits={"memory": "2Gi"},
        ),
        # main.py's exit codes are all failures (see ingestion_docker_dag.py).
        skip_on_exit_code=None,
        do_xcom_push=True,
        get_logs=True,
        on_finish_action="delete_pod",
        retries=1,
        retry_delay=timedelta(minutes=5),
        execution_timeout=timedelta(hours=2),
        **config_delivery,
    )


with DAG(
    dag_id="ingestion_kubernetes",
    description="Metadata ingestion with the connector images (KubernetesPodOperator)",
    schedule="@daily",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["ingestion", "kubernetes"],
) as dag:
    ingest_postgres_env = ingestion_pod(
        "ingest_postgres_env", "datahub-postgres",
        secrets=[Secret("env", "config", RECIPE_SECRET, RECIPE_KEY)],
    )
    ingest_postgres_file = ingestion_pod(
        "ingest_postgres_file", "datahub-postgres",
        secrets=[Secret("volume", SECRET_DIR, RECIPE_SECRET)],
        env_vars={"config_file": f"{SECRET_DIR}/{RECIPE_KEY}"},
    )

    @task
    def report(*summaries: dict) -> dict:
        """The pods' JSON summaries (already parsed by the operator); totals for downstream tasks."""
        for summary in summaries:
            print(f"{summary['connector']}: {summary['status']}, {summary['records']} records")
        return {"records": sum(s["records"] for s in summaries), "runs": len(summaries)}

    report(ingest_postgres_env.output, ingest_postgres_file.output)
