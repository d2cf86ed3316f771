"""Every task's result record, as its report shows it: the keys, their order and their values.

Written before the result families became one type (model/results.py StepResult), and kept: a change to a
report is a change a reader of build/reports/*.json (or `inv verify --json`) sees, and must be deliberate.
"""

from __future__ import annotations

import json
from pathlib import Path

from ingestion_factory.engine.debian_archive import DebianUpdate
from ingestion_factory.model import osv
from ingestion_factory.model.results import BuildStatus, Result, write_json
from ingestion_factory.model.trust_records import VerificationRecord
from ingestion_factory.workflows import trust_check
from ingestion_factory.workflows.audit import AuditStatus, ImageAudit, PythonUpdate
from ingestion_factory.workflows.bundle import CheckStatus, ImageCheck
from ingestion_factory.workflows.lock import LockResult, LockStatus, PackageChange
from ingestion_factory.workflows.push import PushResult, PushStatus, TagResult

IMAGE_ID, DIGEST = "sha256:aaa", "sha256:ddd"


def reported(tmp_path, results) -> str:
    """The report's images, as written (json.dumps keeps the order of the keys)."""
    document = json.loads(write_json(tmp_path / "report.json", results, {"extra": 1}).read_text())
    assert list(document) == ["created", "extra", "images"]
    return json.dumps(document["images"])


def test_the_build_report_is_unchanged(tmp_path):
    result = Result(name="alpha", ref="ns/a:1.0", status=BuildStatus.FAILED, detail="pip failed",
                    cause="package not found", duration_s=12.5, smoke_s=1.5, build_s=10.0, normalize_s=0.2,
                    sbom_check_s=0.5, tag_s=0.1, image_id=IMAGE_ID, size=1000, added=10, tags=("1.0", "latest"), log="alpha.log",
                    details=("no such package", "uv pip"), platform="linux/arm64")
    assert reported(tmp_path, [result]) == json.dumps([{
        "name": "alpha", "ref": "ns/a:1.0", "result": "failed", "reason": "pip failed", "cause": "package not found",
        "duration_s": 12.5, "smoke_s": 1.5, "build_s": 10.0, "normalize_s": 0.2, "sbom_check_s": 0.5, "tag_s": 0.1, "image_id": IMAGE_ID,
        "size": 1000, "added": 10, "tags": ["1.0", "latest"], "log": "alpha.log",
        "details": ["no such package", "uv pip"], "platform": "linux/arm64"}])


def test_the_push_report_is_unchanged(tmp_path):
    tag = TagResult(name="1.0", ref="reg/ns/a:1.0", status=PushStatus.PUSHED, digest=DIGEST, detail="", tries=1,
                    duration_s=1.5, kept={"linux/arm64": "sha256:eee"})
    result = PushResult(name="alpha", image="ns/a:1.0", repository="reg/ns/a", status=PushStatus.FAILED,
                        tags=["1.0"], digest=DIGEST, image_id=IMAGE_ID, detail="signing: no key", duration_s=3.2,
                        tag_results=[tag], platforms={"linux/amd64": "sha256:fff"}, signed={DIGEST: "signed"})
    assert reported(tmp_path, [result]) == json.dumps([{
        "name": "alpha", "image": "ns/a:1.0", "repository": "reg/ns/a", "result": "failed", "tags": ["1.0"],
        "digest": DIGEST, "image_id": IMAGE_ID, "reason": "signing: no key", "duration_s": 3.2,
        "tag_results": [{"tag": "1.0", "ref": "reg/ns/a:1.0", "result": "pushed", "digest": DIGEST, "reason": "",
                         "tries": 1, "duration_s": 1.5, "kept": {"linux/arm64": "sha256:eee"}}],
        "platforms": {"linux/amd64": "sha256:fff"}, "signed": {DIGEST: "signed"}}])


def test_the_unbundle_report_is_unchanged(tmp_path):
    check = ImageCheck(name="alpha", image_id=IMAGE_ID, status=CheckStatus.SMOKE_FAILED, detail="exit 1",
                       duration_s=2.5)
    assert reported(tmp_path, [check]) == json.dumps([{
        "name": "alpha", "image_id": IMAGE_ID, "status": "smoke test failed", "detail": "exit 1", "smoke_s": 2.5}])


def test_the_lock_report_is_unchanged():
    """lock-latest.json's entry of one lock, as the command wrote it inline before LockResult was a StepResult."""
    result = LockResult(name="alpha", path=Path("images/connectors/alpha/locks/1.0.lock"), status=LockStatus.UPDATED,
                        detail="3 packages", changes=(PackageChange("requests", "2.0", "2.1"),
                                                      PackageChange("idna", None, "3.7")),
                        packages=3, duration_s=4.2, warnings=("w",), details=("d",))
    assert json.dumps(result.as_json()) == json.dumps({
        "name": "alpha", "path": "images/connectors/alpha/locks/1.0.lock", "status": "updated",
        "message": "3 packages", "packages": 3, "changes": ["requests: 2.0 -> 2.1", "+ idna 3.7"]})


def test_the_audit_report_is_unchanged():
    finding = osv.Finding(osv.Component("PyPI", "requests", "2.0"), "GHSA-1", ("CVE-1",), "bad", ("2.1",))
    audit = ImageAudit(name="alpha", ref="ns/a:1.0", status=AuditStatus.FIXABLE, source="sbom.json",
                       debian=(DebianUpdate("libc6", "1", "2", "bookworm-security"),),
                       python=(PythonUpdate("requests", "2.0", "2.1"),), vulnerabilities=(finding,), detail="why",
                       osv_checked=True)
    assert json.dumps(audit.as_json()) == json.dumps({
        "name": "alpha", "ref": "ns/a:1.0", "status": "fixes available", "sbom": "sbom.json", "detail": "why",
        "debian": [{"package": "libc6", "installed": "1", "fixed": "2", "suite": "bookworm-security"}],
        "python": [{"package": "requests", "installed": "2.0", "newest": "2.1", "framework": False}],
        "vulnerabilities": [{"id": "GHSA-1", "aliases": ["CVE-1"], "ecosystem": "PyPI", "package": "requests",
                             "version": "2.0", "fixed": ["2.1"], "summary": "bad"}]})


def verdict(*checks: trust_check.CheckResult, record: VerificationRecord | None = None) -> trust_check.Verdict:
    return trust_check.Verdict(name=f"ns/a:1.0@{DIGEST}", digest=DIGEST, checks=checks, record=record,
                               key="k.pub" if record else "")


def test_the_verify_report_is_unchanged():
    record = VerificationRecord(*[f"v{i}" for i in range(14)])
    passed = trust_check.CheckResult(trust_check.Check.DIGEST, True, DIGEST)
    failed = trust_check.CheckResult(trust_check.Check.SIGNATURE, False, "no signature")
    assert trust_check.summary_json([verdict(passed, failed, record=record), verdict()]) == json.dumps({
        "verified": False, "images": [
            {"reference": f"ns/a:1.0@{DIGEST}", "digest": DIGEST, "verified": False, "key": "k.pub",
             "checks": [{"check": "digest", "ok": True, "detail": DIGEST},
                        {"check": "signature", "ok": False, "detail": "no signature"}],
             "record": {"image": "v0", "platform": "v1", "input_hash": "v2", "parent_id": "v3", "image_id": "v4",
                        "lock_digest": "v5", "sbom_digest": "v6", "framework": "v7", "framework_version": "v8",
                        "source_revision": "v9", "source_uri": "v10", "builder": "v11", "smoke_command": "v12",
                        "smoke_result": "v13", "resolution": "",
                            "source_date_epoch": ""}},
            {"reference": f"ns/a:1.0@{DIGEST}", "digest": DIGEST, "verified": False, "key": "", "checks": [],
             "record": None}]}, indent=2)
    assert verdict(passed).verified and verdict(passed).detail == "verified"
    assert verdict(passed, failed).detail == "signature check failed: no signature"


# --- the one result type ---------------------------------------------------------------------------------

FAMILIES = (Result, PushResult, TagResult, LockResult, trust_check.Verdict, ImageAudit, ImageCheck)


def test_every_tasks_result_is_a_frozen_step_result_with_a_status_that_says_whether_it_failed():
    import dataclasses

    from ingestion_factory.model.results import StepResult, StepStatus

    assert set(FAMILIES) <= set(StepResult.__subclasses__())
    for family in FAMILIES:
        assert family.__dataclass_params__.frozen, family
        status = {f.name: f for f in dataclasses.fields(family)}["status"].type
        statuses = {BuildStatus, PushStatus, LockStatus, trust_check.VerifyStatus, AuditStatus, CheckStatus}
        assert status in {s.__name__ for s in statuses}, (family, status)
    # A list: members of two enums with one word ("failed") are equal strings, and a set would keep one.
    failing = [BuildStatus.FAILED, BuildStatus.NOT_BUILT, PushStatus.FAILED, PushStatus.NOT_PUSHED, PushStatus.REFUSED,
               LockStatus.FAILED, LockStatus.NOT_LOCKED, trust_check.VerifyStatus.NOT_VERIFIED, AuditStatus.FIXABLE,
               CheckStatus.NOT_LOADED, CheckStatus.MISMATCH, CheckStatus.SMOKE_FAILED]
    for enum in statuses:
        assert issubclass(enum, StepStatus)
        assert [m.name for m in enum if m.failed] == [m.name for m in failing if type(m) is enum], enum


def test_every_report_key_names_an_attribute_of_its_record():
    import dataclasses

    for family in FAMILIES:
        names = {f.name for f in dataclasses.fields(family)}
        for key in family.JSON_KEYS:
            attribute = key.partition("=")[2] or key
            assert attribute in names or isinstance(getattr(family, attribute, None), property), (family, key)


def test_a_results_failed_is_its_status():
    failed = ImageCheck(name="a", image_id=IMAGE_ID, status=CheckStatus.MISMATCH)
    assert failed.failed and not ImageCheck(name="a", image_id=IMAGE_ID).failed
    assert verdict().failed and verdict().detail == "verified"  # no check made: not verified
    passed = trust_check.CheckResult(trust_check.Check.DIGEST, True, DIGEST)
    assert not verdict(passed).failed and verdict(passed).status is trust_check.VerifyStatus.VERIFIED
