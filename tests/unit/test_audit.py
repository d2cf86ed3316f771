"""inv audit: OSV matching, Debian version order, the archive's Release/Packages checks, the exit code."""

from __future__ import annotations

import hashlib
import json
import lzma
import shutil
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ingestion_factory import platforms
from ingestion_factory import settings as settings_mod
from ingestion_factory.engine import debian_archive, python_image
from ingestion_factory.engine.debian_archive import Archive, ArchiveUnverified
from ingestion_factory.errors import ConfigError
from ingestion_factory.model import osv
from ingestion_factory.workflows import audit

# Real OSV schema (https://ossf.github.io/osv-schema/), shortened from published records.
PYPI_RECORD = {
    "schema_version": "1.6.0",
    "id": "GHSA-9wx4-h78v-vm56",
    "modified": "2024-06-10T18:30:00Z",
    "published": "2024-05-20T20:15:00Z",
    "aliases": ["CVE-2024-35195"],
    "summary": "Requests Session object does not verify requests after making first request with verify=False",
    "affected": [{
        "package": {"ecosystem": "PyPI", "name": "requests", "purl": "pkg:pypi/requests"},
        "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.32.0"}]}],
        "versions": ["2.31.0"],
    }],
}
DEBIAN_RECORD = {
    "schema_version": "1.6.0",
    "id": "DSA-5863-1",
    "modified": "2025-02-12T00:00:00Z",
    "aliases": ["CVE-2025-0395"],
    "summary": "glibc - security update",
    "affected": [{
        "package": {"ecosystem": "Debian:12", "name": "glibc"},
        "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.36-9+deb12u10"}]}],
    }],
}
LAST_AFFECTED_RECORD = {
    "id": "PYSEC-2099-1",
    "modified": "2099-01-01T00:00:00Z",
    "affected": [{"package": {"ecosystem": "PyPI", "name": "Py_YAML"},
                  "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "5.1"}, {"last_affected": "5.4"}]}]}],
}


def test_a_component_inside_the_range_is_matched_and_one_outside_is_not():
    database = osv.Database([PYPI_RECORD, DEBIAN_RECORD])
    [finding] = database.findings(osv.Component("PyPI", "requests", "2.31.0"))
    assert (finding.id, finding.aliases, finding.fixed) == ("GHSA-9wx4-h78v-vm56", ("CVE-2024-35195",), ("2.32.0",))
    assert database.findings(osv.Component("PyPI", "requests", "2.32.3")) == []
    assert database.findings(osv.Component("Debian:12", "glibc", "2.36-9+deb12u9"))
    assert database.findings(osv.Component("Debian:12", "glibc", "2.36-9+deb12u10")) == []
    assert database.findings(osv.Component("Debian:11", "glibc", "2.31-13")) == []  # another ecosystem


def test_last_affected_is_included_and_names_are_canonical_on_pypi():
    database = osv.Database([LAST_AFFECTED_RECORD])
    assert database.findings(osv.Component("PyPI", "py-yaml", "5.4"))
    assert not database.findings(osv.Component("PyPI", "py-yaml", "5.4.1"))
    assert not database.findings(osv.Component("PyPI", "py-yaml", "5.0"))


def test_a_versions_list_matches_without_ranges():
    record = {"id": "X-1", "affected": [{"package": {"ecosystem": "PyPI", "name": "six"}, "versions": ["1.16.0"]}]}
    assert osv.Database([record]).findings(osv.Component("PyPI", "six", "1.16.0"))
    assert not osv.Database([record]).findings(osv.Component("PyPI", "six", "1.17.0"))


@pytest.mark.parametrize("low, high", [
    ("1.0~rc1-1", "1.0-1"),  # a tilde sorts before everything
    ("2.36-9+deb12u9", "2.36-9+deb12u10"),  # numerically, not as text
    ("9.9-1", "1:0.1-1"),  # the epoch first
    ("20230311", "20230311+deb12u1"),
])
def test_debian_version_order(low, high):
    assert osv.in_range(low, [{"introduced": "0"}, {"fixed": high}], "Debian:12")
    assert not osv.in_range(high, [{"introduced": "0"}, {"fixed": high}], "Debian:12")


def test_records_are_read_from_a_zip_or_a_directory(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "GHSA-9wx4-h78v-vm56.json").write_text(json.dumps(PYPI_RECORD))
    with zipfile.ZipFile(tmp_path / "all.zip", "w") as archive:
        archive.writestr("DSA-5863-1.json", json.dumps(DEBIAN_RECORD))
    assert osv.Database.load([tmp_path / "dir", tmp_path / "all.zip"]).records == 2
    with pytest.raises(ConfigError, match="does not exist"):
        list(osv.read_records(tmp_path / "missing"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.json").write_text("{}")
    with pytest.raises(ConfigError, match="not an OSV record"):
        list(osv.read_records(tmp_path / "bad"))


def test_the_vex_document_leaves_each_finding_in_triage():
    [finding] = osv.Database([PYPI_RECORD]).findings(osv.Component("PyPI", "requests", "2.31.0", "pkg:pypi/requests@2.31.0"))
    document = osv.vex([finding], subject="ingestion-connector-mysql")
    assert (document["bomFormat"], document["specVersion"]) == ("CycloneDX", "1.6")
    [vulnerability] = document["vulnerabilities"]
    assert vulnerability["analysis"] == {"state": "in_triage"}
    assert vulnerability["affects"] == [{"ref": "pkg:pypi/requests@2.31.0",
                                         "versions": [{"version": "2.31.0", "status": "affected"}]}]
    assert vulnerability["references"][0]["id"] == "CVE-2024-35195"


# --- the archive ---------------------------------------------------------------------------------------

PACKAGES = """Package: libc6
Source: glibc
Version: 2.36-9+deb12u10
Architecture: amd64

Package: libc6
Source: glibc
Version: 2.36-9+deb12u9
Architecture: amd64

Package: tzdata
Version: 2025b-0+deb12u1
Architecture: all
"""


def release(entries: dict[str, bytes], valid_until: str = "Tue, 08 Dec 2099 01:33:13 UTC") -> bytes:
    lines = [f" {hashlib.sha256(data).hexdigest()} {len(data)} {path}" for path, data in entries.items()]
    return (f"Origin: Debian\nCodename: bookworm-security\nValid-Until: {valid_until}\nSHA256:\n"
            + "\n".join(lines) + "\n").encode()


@pytest.fixture
def settings(project):
    return settings_mod.load(settings_mod.pyproject_defaults(project), project)


def fake_mirror(settings, indexes: dict[str, bytes]):
    """suite -> its compressed Packages; every InRelease names the right hash. Records what was fetched."""
    fetched = []
    urls = {}
    for suite in debian_archive.suites(settings):
        data = indexes.get(suite.name, lzma.compress(b""))
        urls[suite.url("main/binary-amd64/Packages.xz")] = data
        urls[suite.url("InRelease")] = release({"main/binary-amd64/Packages.xz": data})

    def fetch(url):
        fetched.append(url)
        return urls[url]

    return fetch, fetched


def test_updates_come_from_the_newest_suite_and_the_cache_serves_a_warm_run(settings, tmp_path):
    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(b"")
    settings = settings.with_overrides(debian_keyring=str(keyring))
    fetch, fetched = fake_mirror(settings, {"bookworm-security": lzma.compress(PACKAGES.encode())})
    archive = Archive(settings, cache_dir=tmp_path / "cache", fetch=fetch, verify=lambda signed, key, source: signed)
    [update] = archive.updates({"libc6": "2.36-9+deb12u9", "tzdata": "2025b-0+deb12u1", "gone": "1"}, "amd64")
    assert (update.name, update.fixed, update.suite) == ("libc6", "2.36-9+deb12u10", "bookworm-security")
    assert archive.source_of("libc6", "amd64") == "glibc"
    fetched.clear()
    warm = Archive(settings, cache_dir=tmp_path / "cache", fetch=fetch, verify=lambda signed, key, source: signed)
    assert warm.updates({"libc6": "2.36-9+deb12u10"}, "amd64") == []
    assert all(url.endswith("InRelease") for url in fetched)  # the indexes came from the cache


def test_an_index_that_does_not_match_its_release_file_is_refused():
    entry = debian_archive.IndexEntry("main/binary-amd64/Packages.xz", hashlib.sha256(b"good").hexdigest(), 4)
    debian_archive.check_index(b"good", entry, source="x")
    with pytest.raises(ArchiveUnverified, match="does not match its Release file"):
        debian_archive.check_index(b"evil", entry, source="x")


def test_an_expired_release_file_is_refused():
    payload = release({"main/binary-amd64/Packages.xz": b""}, valid_until="Tue, 01 Dec 2020 01:33:13 UTC")
    with pytest.raises(ArchiveUnverified, match="expired"):
        debian_archive.release_entries(payload, source="InRelease", now=datetime(2026, 1, 1, tzinfo=timezone.utc))


@pytest.mark.skipif(not shutil.which("gpgv") or not Path("/usr/share/keyrings/debian-archive-keyring.gpg").is_file(),
                    reason="needs gpgv and debian-archive-keyring")
def test_an_unsigned_release_fails_verification_instead_of_warning():
    with pytest.raises(ArchiveUnverified, match="does not verify"):
        debian_archive.verify_release(release({}), Path("/usr/share/keyrings/debian-archive-keyring.gpg"))


def test_a_missing_keyring_is_bad_input(settings, tmp_path):
    settings = settings.with_overrides(debian_keyring=str(tmp_path / "none.gpg"))
    with pytest.raises(ConfigError, match="keyring"):
        Archive(settings, fetch=lambda url: b"").indexes("amd64")


def test_the_python_image_names_all_three_suites_and_checks_the_signature(settings):
    sources = debian_archive.apt_sources(settings)
    assert "Suites: bookworm bookworm-updates\n" in sources
    assert "URIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n" in sources



def test_mmdebstrap_installs_only_the_locked_set_from_the_checked_repository(settings):
    from ingestion_factory.model.debian_lock import LockedPackage, PackageSet

    locked = PackageSet("arm64", 1, (LockedPackage("dpkg", "1.21.22", "arm64", "bookworm", "0" * 64),
                                     LockedPackage("tzdata", "2025b", "all", "bookworm", "1" * 64)))
    command = python_image.mmdebstrap_command(settings, platforms.ARM64, locked, Path("/s/repo"), Path("/s/filters"),
                                              Path("/s/rootfs"))
    assert "--variant=custom" in command and "--architectures=arm64" in command
    assert "--include=dpkg,tzdata" in command
    assert command[-1] == "deb [trusted=yes] copy:///s/repo ./"  # the only source: the checked .debs
    assert f"--setup-hook=upload /s/filters /{python_image.DPKG_FILTERS}" in command


def test_dpkg_status_lists_installed_packages_only():
    status = ("Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9\n\n"
              "Package: old\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n")
    assert debian_archive.dpkg_status(status) == {"libc6": ("2.36-9", "amd64")}


# --- the audit ------------------------------------------------------------------------------------------


class FixedArchive:
    """An archive whose answers are given: name -> newer version."""

    suites = ()

    def __init__(self, newer: dict[str, str]):
        self.newer = newer

    def updates(self, installed, architecture):
        return [debian_archive.DebianUpdate(n, v, self.newer[n], "bookworm-security")
                for n, v in sorted(installed.items()) if n in self.newer]

    def source_of(self, name, architecture):
        return {"libc6": "glibc"}.get(name, name)


def sbom(*components):
    return {"components": [
        {"name": name, "version": version, "bom-ref": purl, "purl": purl,
         "properties": [{"name": audit.ORIGIN, "value": origin}]} for name, version, origin, purl in components]}


SBOM = sbom(("requests", "2.31.0", "pip", "pkg:pypi/requests@2.31.0"),
            ("libc6", "2.36-9+deb12u9", "dpkg", "pkg:deb/debian/libc6@2.36-9%2Bdeb12u9?arch=amd64&distro=debian-12"))


def test_fixes_give_exit_1_and_a_clean_image_exit_0(settings):
    fixable = audit.Auditor(settings, FixedArchive({"libc6": "2.36-9+deb12u10"}), lambda name: (SBOM, "copy"),
                            osv_db=osv.Database([PYPI_RECORD, DEBIAN_RECORD]))
    [result] = fixable.run(["base"], python_image=False)
    assert [u.fixed for u in result.debian] == ["2.36-9+deb12u10"]
    assert {f.id for f in result.vulnerabilities} == {"GHSA-9wx4-h78v-vm56", "DSA-5863-1"}  # glibc by source
    assert audit.exit_code([result]) == 1
    assert "1 Debian update(s)" in result.summary()
    clean = audit.Auditor(settings, FixedArchive({}), lambda name: (SBOM, "copy"))
    assert audit.exit_code(clean.run(["base"], python_image=False)) == 0
    missing = audit.Auditor(settings, FixedArchive({}), lambda name: None).run(["base"], python_image=False)
    assert missing[0].status is audit.AuditStatus.NOT_BUILT and audit.exit_code(missing) == 0


def test_python_updates_are_the_resolvers_answer_and_the_framework_is_marked_apart(settings):
    """A fake uv: the fresh resolution moves requests; the newest framework release is 9.9.9."""
    from ingestion_factory.model import catalog as catalog_mod
    from ingestion_factory.workflows import lock as lock_mod

    calls = []

    def resolver(args, env):
        calls.append(args)
        output = Path(args[args.index("--output-file") + 1])
        if "--no-deps" in args:
            output.write_text("openmetadata-ingestion==9.9.9\n")
        else:
            output.write_text("requests==2.32.3 \\\n    --hash=sha256:aa\nsix==1.17.0 \\\n    --hash=sha256:bb\n")
        return __import__("subprocess").CompletedProcess(args, 0, "", "")

    targets = lock_mod.targets(catalog_mod.discover(settings), settings)
    locker = lock_mod.Locker(settings, targets, resolver=resolver, upgrade=True)
    document = sbom(("requests", "2.31.0", "pip", "pkg:pypi/requests@2.31.0"),
                    ("six", "1.17.0", "pip", "pkg:pypi/six@1.17.0"),
                    ("openmetadata-ingestion", "1.12.14.2", "pip", "pkg:pypi/openmetadata-ingestion@1.12.14.2"))
    auditor = audit.Auditor(settings, FixedArchive({}), lambda name: (document, "copy"), locker=locker)
    [result] = auditor.run(["base"], python_image=False)
    assert [(u.name, u.newest, u.framework) for u in result.python] == [
        ("requests", "2.32.3", False), ("openmetadata-ingestion", "9.9.9", True)]
    assert audit.upgrade_packages([result]) == ["requests"]
    assert any("--upgrade" in args for args in calls)
    # A second run within the hour reuses the resolution (only the framework release is asked again).
    calls.clear()
    audit.Auditor(settings, FixedArchive({}), lambda name: (document, "copy"), locker=locker).run(["base"], python_image=False)
    assert all("--no-deps" in args for args in calls)


def test_an_sbom_copy_nested_too_deep_is_a_row_not_the_end_of_the_audit(settings):
    """`inv audit` reads the copy a build kept (or the image's own SBOM): one too deep is that image's row."""
    from ingestion_factory.cli import audit as audit_cli
    from ingestion_factory.model import plan as plan_mod

    copy = plan_mod.sbom_copies(settings) / "base.cdx.json"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(b"[" * (4 * 1024 * 1024))
    report = settings.output_path / "audit.json"
    assert audit_cli.audit(settings, ["base"], json_path=str(report), python=False) == 0
    [row] = json.loads(report.read_text())["images"]
    assert row["status"] == audit.AuditStatus.NOT_BUILT.value
    assert "is nested deeper than 100 levels" in json.dumps(row)


@pytest.mark.parametrize("data, says", [
    (b"[" * (1024 * 1024), "is nested deeper than 100 levels"),
    (b" " * (2 * 1024 * 1024 + 1), "is larger than 2 MiB, the most that is read of it"),
    (b"<html>", "is not JSON ("),
], ids=["1 MiB nested", "oversize", "not JSON"])
def test_an_osv_record_nested_too_deep_too_large_or_no_json_is_bad_input(tmp_path, monkeypatch, data, says):
    assert osv.MAX_RECORD_BYTES == 8 * 1024 * 1024
    monkeypatch.setattr(osv, "MAX_RECORD_BYTES", 2 * 1024 * 1024)  # as 8 MiB would be, with less memory
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "GHSA-x.json").write_bytes(data)
    with zipfile.ZipFile(tmp_path / "all.zip", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("GHSA-x.json", data)
    for source, where in ((tmp_path / "dir", tmp_path / "dir" / "GHSA-x.json"),
                          (tmp_path / "all.zip", f"{tmp_path / 'all.zip'}:GHSA-x.json")):
        with pytest.raises(ConfigError) as refused:
            list(osv.read_records(source))
        assert refused.value.message.startswith(f"{where} {says}") and refused.value.exit_code == 2


def test_the_python_image_row_reads_the_lock_without_an_engine(settings, monkeypatch):
    """`inv audit -c python-image` audits what images/python/debian.lock pins: the image every machine builds."""
    from ingestion_factory.cli import audit as audit_cli
    from ingestion_factory.files import write_atomically
    from ingestion_factory.model.debian_lock import DebianLock, LockedPackage, PackageSet

    pinned = PackageSet("amd64", 1, (LockedPackage("libc6", "2.36-9+deb12u9", "amd64", "bookworm", "0" * 64),))
    write_atomically(python_image.lock_path(settings), DebianLock(python_image.lock_inputs(settings), (pinned,)).render())
    monkeypatch.setattr(audit_cli.debian_archive, "Archive", lambda settings: FixedArchive({"libc6": "2.36-9+deb12u10"}))
    monkeypatch.setattr(audit_cli, "DockerEngine", lambda: pytest.fail("the engine was asked"))
    report = settings.output_path / "audit.json"
    assert audit_cli.audit(settings, ["python-image"], json_path=str(report), python=False) == 1
    [row] = json.loads(report.read_text())["images"]
    assert (row["sbom"], row["debian"][0]["fixed"]) == ("images/python/debian.lock", "2.36-9+deb12u10")
