"""inv lock against a fake uv: parents first, inputs digests, staleness, diffs, upgrades, failures."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from project_tree import add_connector
from testkit import DH_VERSION, OM_VERSION

from ingestion_factory import settings as settings_mod
from ingestion_factory.errors import ConfigError
from ingestion_factory.model import catalog
from ingestion_factory.workflows import lock
from ingestion_factory.workflows.lock import LockState, LockStatus

NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*(?:==\s*(\S+))?")


class FakeUv:
    """Resolves every requirement to the newest version of a tiny index, honouring pins, preferences
    (the existing output file) and --upgrade / --upgrade-package, like uv pip compile."""

    def __init__(self, index: dict[str, list[str]], source_only: dict[str, set[str]] | None = None,
                 fail: set[str] = frozenset()):
        self.index = index
        self.source_only = source_only or {}
        self.fail = fail  # a requirement name whose resolution fails
        self.calls: list[list[str]] = []
        self.overrides: list[str] = []  # the text of each --overrides file uv was given

    def __call__(self, args, env):
        self.calls.append(args)
        files, constraints, output, upgrade, upgrade_packages, only_binary, platform = [], [], None, False, set(), "", ""
        it = iter(args[2:])
        for arg in it:
            if arg in ("--constraints", "--build-constraints"):
                (constraints if arg == "--constraints" else []).append(next(it))
            elif arg == "--overrides":  # a framework version's overrides.txt: what it names is never required here
                self.overrides.append(Path(next(it)).read_text())
            elif arg == "--output-file":
                output = Path(next(it))
            elif arg == "--upgrade":
                upgrade = True
            elif arg == "--upgrade-package":
                upgrade_packages.add(next(it))
            elif arg == "--only-binary":
                only_binary = next(it)
            elif arg == "--python-platform":
                platform = next(it)
            elif arg in ("--python-version",):
                next(it)
            elif not arg.startswith("--"):
                files.append(arg)
        if "--no-deps" in args:  # the wheel survey
            for line in Path(files[0]).read_text().splitlines():
                name = line.split("==")[0]
                if name in self.source_only.get(platform, set()) and name in only_binary.split(","):
                    return subprocess.CompletedProcess(args, 1, "", f"hint: Wheels are required for `{name}` because")
            return subprocess.CompletedProcess(args, 0, "", "")
        pins = {}
        for path in constraints:
            for line in Path(path).read_text().splitlines():
                match = NAME.match(line.strip())
                if match and match[2]:
                    pins[match[1].lower()] = match[2]
        preferred = {}
        if output and output.exists() and not upgrade:
            for line in output.read_text().splitlines():
                match = NAME.match(line)
                if match and match[2] and not line.startswith("#"):
                    preferred[match[1].lower()] = match[2]
        names, required = [], {}
        for path in files:
            for line in Path(path).read_text().splitlines():
                match = NAME.match(line.strip())
                if match and not line.startswith("#"):
                    names.append(match[1].lower())
                    if match[2]:  # `name==version` (the framework of the version being locked)
                        required[match[1].lower()] = match[2]
        if self.fail & set(names):
            return subprocess.CompletedProcess(args, 1, "", "  × No solution found when resolving dependencies:\n"
                                               f"  ╰─▶ Because {sorted(self.fail & set(names))[0]} was not found in the package "
                                               "registry and you require it, we can conclude that your "
                                               "requirements are unsatisfiable.")
        lines = []
        for name in sorted(set(names)):
            version = pins.get(name) or required.get(name) \
                or (None if name in upgrade_packages else preferred.get(name)) or self.index[name][-1]
            lines.append(f"{name}=={version} \\\n    --hash=sha256:{abs(hash((name, version))):064d}"[:200])
        output.write_text("\n".join(lines) + "\n")
        return subprocess.CompletedProcess(args, 0, "", "")


INDEX = {"openmetadata-ingestion": [OM_VERSION], "acryl-datahub": [DH_VERSION], "dumb-init": ["1.2.5.post1"],
         "cachetools": ["5.3.0", "5.5.2"], "pymysql": ["1.1.0", "1.1.1"], "psycopg2-binary": ["2.9.9"],
         "cyclonedx-bom": ["7.5.0"], "cx-oracle": ["8.3.0"]}


@pytest.fixture
def tree(project):
    add_connector(project, "mysql", "pymysql>=1.1\n")
    add_connector(project, "postgres", "psycopg2-binary\n")
    add_connector(project, "mysql-plus", "pymysql\n", settings='parent = "mysql"\n')
    for path in project.glob("images/**/requirements.lock"):
        path.unlink()
    return project


def setup(project):
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    found = catalog.discover(settings)
    return settings, lock.targets(found, settings)


def lock_all(project, uv, names=None, **options):
    settings, targets = setup(project)
    locker = lock.Locker(settings, targets, resolver=uv, **options)
    named = [n for n in names] if names else None
    return {r.name: r for r in locker.run(lock.select(targets, names), upgrade_names=named, jobs=2)}


def test_locks_are_written_parents_first_and_hold_the_parents_pins(tree):
    add_connector(tree, "kafka", "openmetadata-ingestion[kafka]\n")
    uv = FakeUv(INDEX)
    results = lock_all(tree, uv)
    assert {r.status for r in results.values()} == {LockStatus.CREATED}
    child = lock.read(tree / f"images/connectors/mysql-plus/locks/{OM_VERSION}.lock")
    parent = lock.read(tree / f"images/connectors/mysql/locks/{OM_VERSION}.lock")
    base = lock.read(tree / f"images/base/frameworks/openmetadata/{OM_VERSION}/requirements.lock")
    assert base.packages.keys() <= parent.packages.keys() <= child.packages.keys()
    assert parent.packages["pymysql"] == "1.1.1"
    assert child.header["parent-lock"] == parent.digest and parent.header["parent-lock"] == base.digest
    assert child.header["python"] == "3.11"
    # The base was resolved jointly with its catalog's extras first, then under that resolution.
    joint = [c for c in uv.calls if any("joint.in" in a for a in c)]
    assert len(joint) == 1  # only the OpenMetadata catalog uses an extra here
    base_lock = [c for c in uv.calls if "--generate-hashes" in c and any(a.endswith("joint.txt") for a in c)]
    assert len(base_lock) == 1  # and the OpenMetadata base was locked under that joint resolution


def test_a_second_run_resolves_nothing_and_writes_nothing(tree):
    lock_all(tree, FakeUv(INDEX))
    path = tree / f"images/connectors/mysql/locks/{OM_VERSION}.lock"
    before = path.stat().st_mtime_ns
    uv = FakeUv(INDEX)
    results = lock_all(tree, uv)
    assert uv.calls == []
    assert {r.status for r in results.values()} == {LockStatus.UNCHANGED}
    assert path.stat().st_mtime_ns == before


def test_check_names_the_lock_whose_fragment_changed(tree):
    lock_all(tree, FakeUv(INDEX))
    settings, targets = setup(tree)
    assert all(c.current for c in lock.check(targets, settings))
    (tree / "images/connectors/postgres/requirements.txt").write_text("psycopg2-binary>=2.9\n")
    settings, targets = setup(tree)
    stale = [c for c in lock.check(targets, settings) if not c.current]
    assert [(c.name, c.state) for c in stale] == [("postgres", LockState.STALE)]
    assert "requirements.txt" in stale[0].detail
    with pytest.raises(ConfigError) as caught:
        lock.require_current(targets, settings, ["postgres"])
    assert caught.value.hint == f"run: inv lock -c postgres --version {OM_VERSION}"


def test_a_relocked_parent_whose_packages_moved_makes_its_children_stale(tree):
    lock_all(tree, FakeUv(INDEX))
    (tree / "images/connectors/mysql/requirements.txt").write_text("pymysql\npsycopg2-binary\n")
    assert lock_all(tree, FakeUv(INDEX), ["mysql"])["mysql"].changes
    settings, targets = setup(tree)
    states = {c.name: c.state for c in lock.check(targets, settings)}
    assert states["mysql"] is LockState.CURRENT
    assert states["mysql-plus"] is LockState.PARENT_STALE
    assert states["postgres"] is LockState.CURRENT


def test_a_lock_for_another_python_is_named_as_such(tree):
    lock_all(tree, FakeUv(INDEX))
    path = tree / f"images/connectors/mysql/locks/{OM_VERSION}.lock"
    path.write_text(path.read_text().replace("# python: 3.11", "# python: 3.12"))
    settings, targets = setup(tree)
    [found] = [c for c in lock.check(targets, settings, ["mysql"]) if c.name == "mysql"]
    assert found.state is LockState.OTHER_PYTHON
    assert "Python 3.12" in found.detail and "3.11" in found.detail


def test_upgrade_package_changes_only_the_locks_that_hold_it(tree):
    index = {**INDEX, "pymysql": ["1.1.0"]}
    lock_all(tree, FakeUv(index))
    postgres = tree / f"images/connectors/postgres/locks/{OM_VERSION}.lock"
    untouched = postgres.read_bytes(), postgres.stat().st_mtime_ns
    index["pymysql"] = ["1.1.0", "1.2.0"]
    results = lock_all(tree, FakeUv(index), upgrade_packages=["pymysql"])
    assert results["mysql"].status is LockStatus.UPDATED
    assert [str(c) for c in results["mysql"].changes] == ["pymysql: 1.1.0 -> 1.2.0"]
    assert results["mysql-plus"].status is LockStatus.UPDATED
    assert results["postgres"].status is LockStatus.UNCHANGED
    assert (postgres.read_bytes(), postgres.stat().st_mtime_ns) == untouched


def test_a_failed_resolution_keeps_the_old_lock_and_locks_no_child(tree):
    lock_all(tree, FakeUv(INDEX))
    path = tree / f"images/connectors/mysql/locks/{OM_VERSION}.lock"
    old = path.read_bytes()
    (tree / "images/connectors/mysql/requirements.txt").write_text("pymysql\nno-such-package\n")
    results = lock_all(tree, FakeUv(INDEX, fail={"no-such-package"}))
    assert results["mysql"].status is LockStatus.FAILED
    assert results["mysql"].detail == ("package not found: no-such-package was not found in the package registry")
    assert "No solution found" in results["mysql"].details[0]
    assert results["mysql-plus"].status is LockStatus.NOT_LOCKED
    assert path.read_bytes() == old
    assert not list(path.parent.glob(".*.tmp"))


def broken_for(package, error):
    """A resolver that raises `error` whenever it is asked about `package`, and is FakeUv otherwise."""
    uv = FakeUv(INDEX)

    def resolver(args, env):
        if any(Path(arg).is_file() and package in Path(arg).read_text() for arg in args):
            raise error
        return uv(args, env)
    return resolver


def test_an_unexpected_error_in_one_lock_fails_that_lock_and_keeps_the_others_results(tree):
    """An OSError writing a lock or a bug in the resolver is one FAILED lock, not the end of the run."""
    results = lock_all(tree, broken_for("psycopg2-binary", RuntimeError("resolver wrapper broke")))
    assert results["postgres"].status is LockStatus.FAILED
    assert results["postgres"].detail == "RuntimeError: resolver wrapper broke"
    assert results["mysql"].status is LockStatus.CREATED
    assert results["mysql-plus"].status is LockStatus.CREATED


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_in_one_lock_still_ends_the_run(tree, stop):
    with pytest.raises(stop):
        lock_all(tree, broken_for("psycopg2-binary", stop()))


def test_packages_without_wheels_are_recorded_per_platform(tree):
    add_connector(tree, "oracle", "cx-oracle\n")
    uv = FakeUv(INDEX, source_only={"aarch64-manylinux_2_36": {"cx-oracle"}})
    lock_all(tree, uv, ["oracle"])
    header = lock.read(tree / f"images/connectors/oracle/locks/{OM_VERSION}.lock").header
    assert header["built-from-source"].startswith("none")
    assert header["aarch64-built-from-source"] == "cx-oracle"


def test_a_lock_without_hashes_or_header_is_refused(tmp_path):
    path = tmp_path / "requirements.lock"
    path.write_text("six==1.17.0\n")
    with pytest.raises(ConfigError, match="not a lock written by"):
        lock.read(path)
    path.write_text("# inputs: sha256:00\nsix==1.17.0\n")
    with pytest.raises(ConfigError, match="six pinned without --hash"):
        lock.read(path)


def test_a_missing_lock_is_named_with_its_fix(tree):
    settings, targets = setup(tree)
    checks = lock.check(targets, settings, ["mysql"])
    assert [c.state for c in checks] == [LockState.MISSING, LockState.MISSING]  # base, then mysql
    assert lock.fix_command(checks) == f"inv lock -c base -c mysql --version {OM_VERSION}"


def test_unknown_names_are_refused(tree):
    settings, targets = setup(tree)
    with pytest.raises(ConfigError, match="no lock 'nope'"):
        lock.select(targets, ["nope"])


def test_a_fragment_that_moves_the_framework_is_refused_before_resolving(tree):
    lock_all(tree, FakeUv(INDEX))
    (tree / "images/connectors/mysql/requirements.txt").write_text("openmetadata-ingestion==1.11.0\n")
    uv = FakeUv(INDEX)
    results = lock_all(tree, uv, ["mysql"])
    assert results["mysql"].status is LockStatus.FAILED
    assert "would change the framework version" in results["mysql"].detail
    assert not [c for c in uv.calls if "--generate-hashes" in c]


def test_the_committed_locks_match_their_inputs():
    """What `inv lock --check` says in CI, without the subprocess: every image of the repository has a current
    lock for every supported framework version."""
    root = Path(__file__).resolve().parents[2]
    settings = settings_mod.load(settings_mod.pyproject_defaults(root), root)
    stale, counts = [], []
    for view, varied in settings_mod.version_views(settings):
        checks = lock.check(lock.targets(catalog.discover(view), view, only_framework=varied), view)
        stale += [f"{c.name} ({c.version}): {c.state} ({c.detail})" for c in checks if not c.current]
        counts.append(len(checks))
    assert stale == []
    assert counts[0] >= 100  # the defaults: the SBOM tool, both bases and the whole catalog
    assert len(counts) == sum(len(f.supported) for f in settings.frameworks.values()) - len(settings.frameworks) + 1


def test_the_tool_locks_with_the_uv_the_images_install_with():
    root = Path(__file__).resolve().parents[2]
    pinned = re.search(r'"uv==([^"]+)"', (root / "pyproject.toml").read_text())[1]
    for dockerfile in ("images/base/Dockerfile", "images/connectors/Dockerfile"):
        assert f"ARG UV_VERSION={pinned}\n" in (root / dockerfile).read_text(), dockerfile


# --- identity by content: a lock counts by what it pins, not by its header --------------------------------


def test_the_content_digest_ignores_the_header_and_the_layout():
    body = "six==1.17.0 \\\n    --hash=sha256:bb \\\n    --hash=sha256:aa\nPyYAML==6.0.2 \\\n    --hash=sha256:cc\n"
    first = lock.content_digest("# inputs: sha256:01\n# parent-lock: sha256:02\n" + body)
    assert first == lock.content_digest("# inputs: sha256:99\n# built-from-source: six\n" + body)
    # Same pins and hashes in another order and spelling: the same packages.
    assert first == lock.content_digest("pyyaml==6.0.2 --hash=sha256:cc\nsix==1.17.0 --hash=sha256:aa "
                                        "--hash=sha256:bb\n")


def test_the_content_digest_moves_with_a_version_a_hash_or_a_package():
    body = "six==1.17.0 \\\n    --hash=sha256:aa\n"
    first = lock.content_digest(body)
    assert lock.content_digest(body.replace("1.17.0", "1.16.0")) != first
    assert lock.content_digest(body.replace("aa", "ab")) != first
    assert lock.content_digest(body + "pyyaml==6.0.2 \\\n    --hash=sha256:cc\n") != first


def test_a_relock_that_pins_the_same_packages_keeps_the_childrens_locks_current(tree):
    """Adding a connector with a new extra re-locks the base (its joint request moved); when no package
    moved, the base keeps its identity and no other lock becomes stale."""
    lock_all(tree, FakeUv(INDEX))
    base = tree / f"images/base/frameworks/openmetadata/{OM_VERSION}/requirements.lock"
    before = lock.read(base)
    add_connector(tree, "kafka", "openmetadata-ingestion[kafka]\n")
    settings, targets = setup(tree)
    states = {c.name: c.state for c in lock.check(targets, settings)}
    # --check still says the base must be re-locked, and names no child of it: whether they must follow
    # is known once the base is re-locked.
    assert {name: state for name, state in states.items() if state is not LockState.CURRENT} == {
        "base": LockState.STALE, "kafka": LockState.MISSING}
    with pytest.raises(ConfigError, match="base: inputs changed"):  # nothing under it builds meanwhile
        lock.require_current(targets, settings, ["mysql"])
    results = lock_all(tree, FakeUv(INDEX), ["kafka"])
    assert results["base"].status is LockStatus.UPDATED and results["base"].changes == ()
    assert results["base"].same_content and results["kafka"].status is LockStatus.CREATED
    assert set(results) == {"base", "kafka"}  # its siblings were not even looked at
    after = lock.read(base)
    assert after.header["inputs"] != before.header["inputs"] and after.digest == before.digest
    settings, targets = setup(tree)
    assert [c.name for c in lock.check(targets, settings) if not c.current] == []


def test_a_parent_whose_packages_moved_makes_its_children_stale(tree):
    lock_all(tree, FakeUv(INDEX))
    mysql = tree / f"images/connectors/mysql/locks/{OM_VERSION}.lock"
    # Same header, one hash different: the parent's content moved, so its child must be re-locked.
    mysql.write_text(re.sub(r"(pymysql==\S+ \\\n    --hash=sha256:)\d", r"\g<1>x", mysql.read_text()))
    settings, targets = setup(tree)
    states = {c.name: c.state for c in lock.check(targets, settings)}
    assert states["mysql-plus"] is LockState.PARENT_STALE
    assert states["postgres"] is LockState.CURRENT


# --- a connector built FROM an unavailable one ------------------------------------------------------------


def test_a_child_of_an_unavailable_connector_is_unavailable_too_and_locking_skips_it(tree):
    add_connector(tree, "oracle", "cx-oracle\n", 'unavailable = "needs a licensed client"\n')
    add_connector(tree, "oracle-plus", "pymysql\n", 'parent = "oracle"\n')
    settings, targets = setup(tree)
    assert {c.name for c in lock.check(targets, settings)} == set(targets)  # was a KeyError: 'oracle'
    results = lock_all(tree, FakeUv(INDEX))
    assert set(results) == set(targets)
    assert "oracle" not in targets and "oracle-plus" not in targets
    found = catalog.discover(settings)
    assert found["oracle-plus"].unavailable == "built FROM oracle, which is unavailable: needs a licensed client"
    assert "oracle-plus" not in found.resolve(None)
    with pytest.raises(ConfigError, match="oracle-plus.*built FROM oracle, which is unavailable"):
        found.resolve(["oracle-plus"])
    # `inv lock -c oracle-plus` (and --check) exits 2 with that reason rather than "no lock".
    from ingestion_factory.cli import commands

    for check in (True, False):
        with pytest.raises(ConfigError, match="oracle-plus.*built FROM oracle, which is unavailable"):
            commands.lock(settings, ["oracle-plus"], check=check)


def test_a_child_whose_parent_lock_is_missing_waits_for_it(tree):
    lock_all(tree, FakeUv(INDEX))
    (tree / f"images/connectors/mysql/locks/{OM_VERSION}.lock").unlink()
    settings, targets = setup(tree)
    [child] = [c for c in lock.check(targets, settings) if c.name == "mysql-plus"]
    assert child.state is LockState.PARENT_STALE and child.detail == "the lock of mysql must be written first"
