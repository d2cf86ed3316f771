"""`inv run-local` against real containers: the embedded demo, a real PostgreSQL, failures, Ctrl-C."""

from __future__ import annotations

import base64
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from testkit import DH_VERSION, free_port

from ingestion_factory.workflows import metadata_file

REPO = Path(__file__).resolve().parents[2]


def run_local(project, *args: str, check: bool = False, timeout: int = 300):
    return project.inv("run-local", *args, check=check, env=project.run_env, timeout=timeout)


def leftover_containers(docker_api, project) -> list:
    """run-local containers started from this project's images."""
    found = docker_api.containers.list(all=True, filters={"label": "io.ingestion-factory.run-local"})
    return [c for c in found if c.labels.get("io.ingestion-factory.run-local", "").startswith(project.namespace + "/")]


def postgres_recipe(project, postgres, password_reference: str, output: str) -> Path:
    """examples/datahub/postgres.yml, pointed at the test database."""
    recipe = yaml.safe_load((project.examples / "datahub" / "postgres.yml").read_text())
    recipe["source"]["config"].update(host_port=f"{postgres.host}:{postgres.port}", database=postgres.database,
                                      username=postgres.user, password=password_reference)
    recipe["sink"]["config"]["filename"] = f"/opt/operator/output/{output}"
    path = project.examples / "datahub" / f"test-{output}.yml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_demo_writes_the_sample_metadata_and_removes_its_container(run_local_project, docker_api):
    project = run_local_project
    output = project.examples / "output" / "datahub-sqlite.json"
    output.unlink(missing_ok=True)

    result = run_local(project, check=True)

    summary = metadata_file.summarize(output)
    assert summary.tables == ["main.customers", "main.order_items", "main.orders", "main.products"]
    assert summary.views == ["main.customer_revenue"]
    assert summary.columns_of("main.orders") == ["customer_id", "order_id", "ordered_at", "status"]
    assert "Result: success (exit 0)" in result.stdout
    assert "Metadata written to examples/output/datahub-sqlite.json: 4 tables" in result.stdout
    assert "config in env `config`" in result.stdout
    # The fixed link DAGs mount now points at this project's examples.
    assert project.examples_link.resolve() == project.examples.resolve()
    assert leftover_containers(docker_api, project) == []


@pytest.mark.postgres
def test_postgres_with_a_secret_file(run_local_project, postgres_database, docker_api):
    project, db = run_local_project, postgres_database
    secret = project.examples / "secrets" / "test-postgres-password"
    secret.write_text(db.password + "\n")
    config = postgres_recipe(project, db, "${file:../secrets/test-postgres-password}", "test-postgres.json")

    result = run_local(project, "-c", "datahub-postgres", "--config", str(config), check=True)

    summary = metadata_file.summarize(project.examples / "output" / "test-postgres.json")
    assert set(db.tables) <= set(summary.tables)
    assert set(db.views) <= set(summary.views)
    assert summary.columns_of("factory_demo.sales.orders") == ["amount", "customer_id", "order_id", "ordered_at"]
    assert "read-only file /run/secrets/ingestion-config.json, because it holds secrets (password)" in result.stdout
    assert db.password not in result.stdout + result.stderr
    assert leftover_containers(docker_api, project) == []


@pytest.mark.postgres
def test_a_failing_config_fails_with_the_container_exit_code(run_local_project, postgres_database):
    project, db = run_local_project, postgres_database
    wrong = "wrong-" + db.password
    config = postgres_recipe(project, db, "${TEST_PG_PASSWORD}", "test-postgres-failed.json")

    result = project.inv("run-local", "-c", "datahub-postgres", "--config", str(config), check=False,
                         env={**project.run_env, "TEST_PG_PASSWORD": wrong})

    assert result.returncode == 1, result.stdout[-2000:]
    assert "Result: failed (exit 1)" in result.stdout
    assert "password authentication failed" in result.stdout
    assert wrong not in result.stdout + result.stderr


def test_pipeline_type_reaches_main_py(run_local_project):
    # DataHub images accept only "metadata": anything else proves the value arrived, as exit 2.
    result = run_local(run_local_project, "--pipeline-type", "profiler")

    assert result.returncode == 2
    assert "pipelineType: 'profiler' is an OpenMetadata workflow type" in result.stdout
    assert "Result: config_error (exit 2)" in result.stdout


def test_a_missing_image_is_a_clear_error_with_no_build(run_local_project):
    project = run_local_project
    result = run_local(project, "-c", "datahub-mysql", "--config", str(project.examples / "datahub" / "sqlite.yml"),
                       "--no-build")

    assert result.returncode != 0
    assert f"error: image {project.ref('datahub-mysql', DH_VERSION)} does not exist" in result.stderr
    assert "hint: build it with `inv build-connectors -c datahub-mysql`" in result.stderr


def test_an_unknown_placeholder_fails_before_docker_is_touched(run_local_project):
    project = run_local_project
    config = project.examples / "datahub" / "test-placeholder.yml"
    config.write_text("source:\n  type: postgres\n  config:\n    password: ${NO_SUCH_VARIABLE_HERE}\n")

    result = run_local(project, "-c", "datahub-postgres", "--config", str(config))

    assert result.returncode == 2
    assert "needs the environment variable NO_SUCH_VARIABLE_HERE" in result.stderr


def test_keep_leaves_the_container(run_local_project, docker_api):
    project = run_local_project
    result = run_local(project, "--keep", check=True)
    kept = leftover_containers(docker_api, project)
    try:
        assert len(kept) == 1
        assert kept[0].status == "exited"
        assert f"Kept container {kept[0].name}" in result.stdout
    finally:
        for container in kept:
            container.remove(force=True)


class _SilentConfigHandler(http.server.BaseHTTPRequestHandler):
    """Looks like a live server to main.py's probe, then never answers DataHub's /config."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path.startswith("/config"):
            time.sleep(120)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_ctrl_c_stops_the_container_and_removes_it(run_local_project, docker_api, tmp_path):
    project = run_local_project
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _SilentConfigHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    recipe = tmp_path / "hangs.yml"
    recipe.write_text(yaml.safe_dump({
        "source": {"type": "sqlalchemy", "config": {
            "platform": "sqlite", "connect_uri": "sqlite:///file:/opt/operator/sample_db/sample.db?mode=ro&uri=true"}},
        "sink": {"type": "datahub-rest", "config": {"server": f"http://127.0.0.1:{server.server_port}"}},
    }))
    env = dict(os.environ, INVOKE_FACTORY_NAMESPACE=project.namespace, PYTHONPATH=str(REPO), **project.run_env)
    process = subprocess.Popen([sys.executable, "-m", "invoke", "run-local", "--config", str(recipe)],
                               cwd=project.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(c.status == "running" for c in leftover_containers(docker_api, project)):
            assert process.poll() is None, process.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the container never started"
            time.sleep(0.5)
        time.sleep(4)  # past the probe, inside the pipeline's wait for /config
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        server.shutdown()

    assert process.returncode == 143, output[-3000:]
    assert time.monotonic() - started < 15
    assert "Result: stopped (exit 143)" in output
    assert leftover_containers(docker_api, project) == []


def test_the_newcomer_script_runs_the_demo(run_local_project, tmp_path):
    """run_local_docker.sh end to end, with the tool's environment standing in for a fresh .venv."""
    import hashlib
    import shutil

    project = run_local_project
    shutil.copy(REPO / "run_local_docker.sh", project.root / "run_local_docker.sh")
    shutil.copytree(REPO / "scripts", project.root / "scripts", dirs_exist_ok=True)  # its set-up step
    venv_bin = project.root / ".venv" / "bin"
    venv_bin.mkdir(parents=True, exist_ok=True)
    for name, target in (("python", sys.executable), ("inv", None)):
        path = venv_bin / name
        path.unlink(missing_ok=True)
        if target:
            path.symlink_to(target)
        else:
            path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m invoke "$@"\n')
            path.chmod(0o755)
    stamp = hashlib.sha256((project.root / "pyproject.toml").read_bytes()).hexdigest()[:16]
    (project.root / ".venv" / f".run-local-{stamp}").touch()  # installed already: skip pip
    output = project.examples / "output" / "datahub-sqlite.json"
    output.unlink(missing_ok=True)
    env = dict(os.environ, INVOKE_FACTORY_NAMESPACE=project.namespace, PYTHONPATH=str(REPO), **project.run_env)

    completed = subprocess.run(["./run_local_docker.sh"], cwd=project.root, env=env, capture_output=True, text=True,
                               timeout=600)

    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "images are up to date; nothing to build" in completed.stdout
    lines = completed.stdout.strip().splitlines()
    assert lines[-2].startswith("Metadata written to examples/output/datahub-sqlite.json: 4 tables"), lines[-3:]
    assert lines[-1].startswith("Done in ")
    assert metadata_file.summarize(output).views == ["main.customer_revenue"]


def _canary_fields(canary: str) -> dict:
    """The fields of real configs that hold secrets (tests/unit/test_secret_rule.py), each with its own canary."""
    pem = f"-----BEGIN PRIVATE KEY-----\nMIIEv{canary}-pem\n-----END PRIVATE KEY-----"
    basic = base64.b64encode(f"ingest:{canary}-basic".encode()).decode()
    return {
        "passPhrase": f"{canary}-passphrase",
        "basic.auth.user.info": f"registry:{canary}-userinfo",
        "keytab": f"BQIAAABH{canary}-keytab",
        "tls.key": pem,
        "service_account_info": json.dumps({"type": "service_account", "private_key_id": f"{canary}-keyid",
                                            "private_key": pem.replace("-pem", "-gcp")}),
        "http_auth": f"elastic:{canary}-httpauth",
        "databricksPAT": f"dapi{canary}-pat",
        "password": {"value": f"{canary}-valuepassword"},
        "args": ["--user", "ingest", "--password", f"{canary}-argument"],
        "headers": [{"name": "X-API-Key", "value": f"{canary}-header"}, ["Authorization", f"token {canary}-pair"]],
        "sasl.jaas.config": ("org.apache.kafka.common.security.plain.PlainLoginModule required "
                             f'username="ingest" password="{canary}-jaas";'),
        "Authorization": f"Basic {basic}",
        "sqlalchemy_uri": f"postgresql://ingest:Pa/ss#{canary}-url@db.invalid/shop",  # make_url's password
        "oracle_dsn": f"scott/{canary}-oracle@db.invalid:1521/ORCL",
        "ssh_key": f"b3BlbnNzaC1rZXk{canary}-ssh",
        "storageKey": f"{canary}-storage==",
        "ssl.keystore.key": f"MIIEvQIBADANBg{canary}-keystore",
        "extra_headers": {"Cookie": f"session={canary}-cookie; theme=dark"},
    }


def test_a_canary_in_every_secret_field_never_leaves_the_host_config(run_local_project, docker_api):
    project = run_local_project
    canary = "Canary7" + os.urandom(12).hex()  # long enough for pydantic to echo it shortened
    fields = _canary_fields(canary)
    recipe = yaml.safe_load((project.examples / "datahub" / "sqlite.yml").read_text())
    recipe["source"]["config"].update(fields)  # unknown to DataHub: its validation errors echo them
    config = project.examples / "datahub" / "test-canary.yml"
    config.write_text(yaml.safe_dump(recipe))
    basic = fields["Authorization"].split()[1]

    result = run_local(project, "--config", str(config), "--keep")

    kept = leftover_containers(docker_api, project)
    try:
        assert len(kept) == 1, result.stdout[-2000:]
        attrs = docker_api.api.inspect_container(kept[0].id)
        logs = kept[0].logs().decode(errors="replace")
        reports = [path.read_text(errors="replace") for path in (project.root / "build").rglob("*") if path.is_file()]
        assert "because it holds secrets" in result.stdout
        assert result.returncode != 0 and "Result:" in result.stdout  # the container ran and said why it failed
        for where, text in {"inspect": json.dumps(attrs), "container log": logs, "run-local output":
                            result.stdout + result.stderr, "build logs and reports": "\n".join(reports)}.items():
            assert canary not in text and basic not in text, f"a canary reached the {where}"
        mounts = {mount["Destination"]: mount for mount in attrs["Mounts"]}
        assert mounts["/opt/operator"]["RW"] is False and mounts["/opt/operator/output"]["RW"] is True
        assert mounts["/opt/operator/secrets"]["Type"] == "tmpfs"
    finally:
        for container in kept:
            container.remove(force=True)
