"""Build and smoke-test failures name their cause: real BuildKit logs in build_logs/, made by breaking connectors."""

import json
from pathlib import Path

import pytest
from testkit import DH_VERSION, OM_VERSION

from ingestion_factory.model.failures import Cause, diagnose, read_build_log, read_smoke_output

LOGS = Path(__file__).parent / "build_logs"


def read(name: str, framework_package: str = "acryl-datahub"):
    return read_build_log((LOGS / f"{name}.log").read_text().splitlines(), framework_package)


@pytest.mark.parametrize("log, cause, reason", [
    ("notfound", Cause.PACKAGE_NOT_FOUND,
     "package not found: this-package-does-not-exist was not found in the package registry"),
    ("noversion", Cause.PACKAGE_NOT_FOUND, "package not found: there is no version of pyfiglet==99.0"),
    ("pinclash", Cause.PIN_CONFLICT, "version conflict with the parent's pins: the fragment needs pydantic<2 "
                                     "but the parent image pins pydantic==2.14.4"),
    ("debmissing", Cause.DEBIAN_PACKAGE_NOT_FOUND,
     "Debian package not found: no-such-debian-package-xyz (check os_packages in connector.toml)"),
    ("network", Cause.NETWORK,
     "network or TLS failure fetching https://pypi.org/simple/cowsay/: Connection refused (os error 111)"),
    ("tls", Cause.NETWORK,
     "network or TLS failure fetching https://pypi.org/simple/cowsay/: invalid peer certificate: UnknownIssuer "
     "(behind a TLS-intercepting proxy? give its CA with --ca-bundle)"),
    # apt cannot reach its mirror, then says "Unable to locate package": the network is the cause.
    ("aptnet", Cause.NETWORK, "network or TLS failure fetching http://deb.debian.org/debian/dists/bookworm/InRelease: "
                              "Could not connect to 127.0.0.1:9 (127.0.0.1). - connect (111: Connection refused)"),
])
def test_each_kind_of_build_failure_is_named(log, cause, reason):
    diagnosis = read(log)
    assert (diagnosis.cause, diagnosis.reason) == (cause, reason)


@pytest.mark.parametrize("log", ["notfound", "noversion", "pinclash", "debmissing", "network", "tls", "aptnet"])
def test_the_tools_own_words_first_and_the_command_once_last(log):
    details = read(log).details
    assert details[-1].startswith("failed command: [stage-1 ")
    assert sum("RUN " in line for line in details) == 1
    assert len(details[-1]) < 200
    assert details[0].lstrip().startswith(("×", "error:", "E:", "Err:"))


def test_the_resolver_explanation_is_kept_whole():
    details = read("notfound").details
    assert details[:4] == (
        "  × No solution found when resolving dependencies:",
        "  ╰─▶ Because this-package-does-not-exist was not found in the package",
        "      registry and you require this-package-does-not-exist==9.9.9, we can",
        "      conclude that your requirements are unsatisfiable.",
    )


# uv's words when the parent's pins clash with what an extra of the framework needs (buildx log format).
BUILDX_NUMPY = f"""#9 [stage-1 3/3] RUN --mount=type=cache,target=/root/.cache/uv     uv pip install -r /tmp/reqs.txt
#9 1.071   × No solution found when resolving dependencies:
#9 1.073   ╰─▶ Because openmetadata-ingestion[bigquery]=={OM_VERSION}
#9 1.073       depends on numpy<2 and numpy==2.4.6, we can conclude that
#9 1.073       openmetadata-ingestion[bigquery]=={OM_VERSION} cannot be used.
#9 ERROR: process "/bin/sh -c uv pip install -r /tmp/reqs.txt" did not complete successfully: exit code: 1
------
 > [stage-1 3/3] RUN --mount=type=cache,target=/root/.cache/uv     uv pip install -r /tmp/reqs.txt:
1.071   × No solution found when resolving dependencies:
------
Dockerfile:31
--------------------
  31 | >>> RUN --mount=type=cache,target=/root/.cache/uv \\
--------------------
ERROR: failed to solve: process "/bin/sh -c uv pip install -r /tmp/reqs.txt" did not complete successfully: exit code: 1
""".splitlines()

UV_FRAMEWORK = f"""#8 [stage-1 3/3] RUN uv pip install -r /tmp/reqs.txt
#8 0.9   × No solution found when resolving dependencies:
#8 0.9   ╰─▶ Because you require acryl-datahub==1.6.0 and acryl-datahub=={DH_VERSION}, we can
#8 0.9       conclude that your requirements are unsatisfiable.
#8 ERROR: executor failed running [/bin/sh -c uv pip install -r /tmp/reqs.txt]: exit code: 1""".splitlines()


def test_a_pin_conflict_names_the_package_in_the_buildx_format_too():
    diagnosis = read_build_log(BUILDX_NUMPY, "openmetadata-ingestion")
    assert diagnosis.cause is Cause.PIN_CONFLICT
    assert diagnosis.reason.endswith("the fragment needs numpy<2 but the parent image pins numpy==2.4.6")
    assert diagnosis.details[-1] == ("failed command: [stage-1 3/3] RUN --mount=type=cache,target=/root/.cache/uv "
                                     "uv pip install -r /tmp/reqs.txt")


def test_a_clash_on_the_framework_says_it_would_change_the_framework():
    diagnosis = read_build_log(UV_FRAMEWORK, "acryl-datahub")
    assert diagnosis.cause is Cause.FRAMEWORK_CHANGE
    assert "would change the framework version" in diagnosis.reason
    assert "acryl-datahub==1.6.0" in diagnosis.reason and f"acryl-datahub=={DH_VERSION}" in diagnosis.reason


def test_an_unexplained_step_failure_shows_its_last_lines():
    lines = ["#5 [stage-1 2/3] RUN make", "#5 0.1 compiling", "#5 0.2 Segmentation fault",
             "#5 ERROR: executor failed running [/bin/sh -c make]: exit code: 139"]
    diagnosis = read_build_log(lines)
    assert diagnosis.cause is Cause.BUILD_STEP
    assert diagnosis.reason == "build step exited 139: Segmentation fault"
    assert diagnosis.details == ("compiling", "Segmentation fault", "failed command: [stage-1 2/3] RUN make")


def test_a_failure_before_any_step_shows_buildkits_error():
    lines = ["#1 [internal] load build definition from Dockerfile", "#1 DONE 0.0s",
             "failed to solve with frontend dockerfile.v0: failed to read dockerfile: open Dockerfile: no such file"]
    diagnosis = read_build_log(lines)
    assert diagnosis.cause is Cause.BUILD_STEP
    assert diagnosis.reason.startswith("build failed: failed to solve with frontend dockerfile.v0")


def check_output(*lines, summary):
    return "\n".join([*lines, json.dumps(summary)])


def test_a_plugin_that_does_not_import_is_named():
    output = check_output(
        "ok      import datahub",
        "MISSING import module_that_is_missing: cannot import module_that_is_missing: not installed",
        summary={"status": "missing_plugin", "exit_code": 3,
                 "reason": "cannot import module_that_is_missing: not installed"})
    diagnosis = read_smoke_output(3, output, "python main.py --check")
    assert diagnosis.cause is Cause.PLUGIN_IMPORT
    assert diagnosis.reason == ("plugin import failed in the smoke test: "
                                "cannot import module_that_is_missing: not installed")
    assert diagnosis.details == (
        "MISSING import module_that_is_missing: cannot import module_that_is_missing: not installed",
        "failed command: python main.py --check",
    )


def test_other_smoke_failures_keep_the_exit_code_and_the_output():
    diagnosis = read_smoke_output(1, "Traceback (most recent call last):\nboom", "python main.py --check")
    assert diagnosis.cause is Cause.SMOKE_TEST
    assert diagnosis.reason == "smoke test exited 1"
    assert diagnosis.details[:2] == ("Traceback (most recent call last):", "boom")


def test_anything_else_is_an_unexpected_error():
    diagnosis = diagnose(OSError(28, "No space left on device"))
    assert diagnosis.cause is Cause.UNEXPECTED
    assert diagnosis.reason == "OSError: [Errno 28] No space left on device"


def test_a_hash_that_does_not_match_the_lock_names_the_package():
    log = [
        "#14 [image 3/5] RUN --mount=type=cache,target=/root/.cache/uv uv pip sync --require-hashes /tmp/requirements.lock",
        "#14 0.412 Resolved 67 packages in 3ms",
        "#14 0.981   × Failed to download `sqlparse==0.6.1`",
        "#14 0.981   ╰─▶ Hash mismatch for `sqlparse==0.6.1`",
        "#14 0.981 ",
        "#14 0.981       Expected:",
        "#14 0.981         sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "#14 ERROR: process \"/bin/sh -c uv pip sync\" did not complete successfully: exit code: 1",
    ]
    diagnosis = read_build_log(log)
    assert diagnosis.cause is Cause.HASH_MISMATCH
    assert diagnosis.reason.startswith("hash mismatch for sqlparse==0.6.1: ")
    assert "inv lock" in diagnosis.reason


def test_a_locked_version_gone_from_the_index_says_how_to_move_on():
    log = [
        "#14 [image 3/5] RUN uv pip sync --require-hashes /tmp/requirements.lock",
        "#14 0.5   × No solution found when resolving dependencies:",
        "#14 0.5   ╰─▶ Because there is no version of sqlparse==0.0.999 and you require",
        "#14 0.5       sqlparse==0.0.999, we can conclude that your requirements are unsatisfiable.",
        "#14 ERROR: process \"/bin/sh -c uv pip sync\" did not complete successfully: exit code: 1",
    ]
    diagnosis = read_build_log(log)
    assert diagnosis.cause is Cause.PACKAGE_NOT_FOUND
    assert diagnosis.reason.startswith("package not found: there is no version of sqlparse==0.0.999")
    assert "inv lock --upgrade-package" in diagnosis.reason
