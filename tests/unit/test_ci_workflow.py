"""The example CI workflows are valid GitHub Actions workflows (SchemaStore's schema, offline)."""

from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML
from testkit import REPO

builtin_schemas = pytest.importorskip(
    "check_jsonschema.builtin_schemas", reason="install the test extra: pip install -e '.[test]'")

WORKFLOWS = sorted([*(REPO / "examples" / "ci").glob("*.yml"), *(REPO / "examples" / "ci").glob("*.yaml")])


def load(path: Path):
    # YAML 1.2, as GitHub reads workflows: PyYAML (YAML 1.1) would turn the key `on` into True.
    return YAML(typ="safe", pure=True).load(path)


def test_there_is_a_workflow_to_check():
    assert REPO / "examples" / "ci" / "build-images.yml" in WORKFLOWS


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_the_workflow_matches_the_github_workflow_schema(path):
    # check-jsonschema ships SchemaStore's github-workflow.json inside the package: no network.
    schema = builtin_schemas.get_builtin_schema("vendor.github-workflows")
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
              for error in validator.iter_errors(load(path))]
    assert not errors, "\n".join(errors)


def test_the_schema_catches_a_broken_workflow():
    schema = builtin_schemas.get_builtin_schema("vendor.github-workflows")
    workflow = load(REPO / "examples" / "ci" / "build-images.yml")
    del workflow["jobs"]["plan"]["runs-on"]
    assert not jsonschema.validators.validator_for(schema)(schema).is_valid(workflow)
