"""One exit-code rule for every task, at the one error boundary, and documented for every task."""

import re

import pytest
from invoke import Exit
from testkit import REPO

import tasks
from ingestion_factory.cli.commands import raise_for_outcome
from ingestion_factory.errors import ConfigError, DockerUnavailable, FactoryError
from ingestion_factory.model.results import BuildStatus, Result


def exit_code(outcome) -> int:
    @tasks.reports_errors
    def task():
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    try:
        task()
    except Exit as exc:
        return exc.code
    return 0


@pytest.mark.parametrize("outcome, code", [
    (0, 0), (None, 0), (3, 3),  # a task's own status (run-local: the container's exit code)
    (FactoryError("a build failed"), 1),
    (ConfigError("bad input"), 2),
    (DockerUnavailable("no daemon"), 3),
    (KeyboardInterrupt(), 130),
])
def test_the_boundary_turns_errors_into_exit_codes(outcome, code):
    assert exit_code(outcome) == code


def result(name, status):
    return Result(name=name, ref=f"ns/ingestion-connector-{name}:1", status=status)


def test_a_failed_build_exits_1_and_wins_over_a_broken_directory(tmp_path):
    broken = {"bad": ConfigError("bad/requirements.txt lists no requirements")}
    results = [result("a", BuildStatus.FAILED), result("b", BuildStatus.NOT_BUILT), result("c", BuildStatus.BUILT)]
    with pytest.raises(FactoryError) as failed:
        raise_for_outcome(results, broken, tmp_path)
    assert exit_code(failed.value) == 1
    assert failed.value.message == "2 image(s) not built: a, b; 1 connector(s) cannot be built: bad"


@pytest.mark.parametrize("status", [BuildStatus.BUILT, BuildStatus.UP_TO_DATE])
def test_a_broken_directory_exits_2_whatever_was_built(tmp_path, status):
    with pytest.raises(ConfigError) as failed:
        raise_for_outcome([result("a", status)], {"bad": ConfigError("x")}, tmp_path)
    assert exit_code(failed.value) == 2
    raise_for_outcome([result("a", status)], {}, tmp_path)  # nothing wrong: no error


def test_the_docs_give_the_exit_codes_of_every_task():
    section = (REPO / "docs" / "exit-codes.md").read_text()
    documented = set(re.findall(r"^\| `([a-z-]+)` \|", section, flags=re.M))
    assert documented == set(tasks.ns.task_names)
    assert "| task | 0 | 1 | 2 | 3 |" in section
