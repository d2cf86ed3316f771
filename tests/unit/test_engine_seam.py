"""The engine seam: DockerEngine translates the SDK's errors into the seam's own, and the unit tests' one
fake (tests/fake_engine.py) refuses what the Docker engine refuses."""

from __future__ import annotations

import pytest
from docker.errors import APIError, NotFound
from fake_engine import FakeEngine, image_id

from ingestion_factory.engine import docker_engine
from ingestion_factory.engine.docker_engine import ContainerFailed, DockerEngine, EngineRefused, ImageMissing

A, B, C = image_id("a"), image_id("b"), image_id("c")


# --- DockerEngine over an SDK stand-in ------------------------------------------------------------------


class LowLevel:
    """The SDK's low-level client, answering each call with `answers[name]` (raised when an exception)."""

    def __init__(self, **answers):
        self.answers = answers
        self.calls = []

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            answer = self.answers[name]
            if isinstance(answer, Exception):
                raise answer
            return answer

        return call


class Sdk:
    def __init__(self, low):
        self.api = low


def test_the_local_engine_is_the_default(monkeypatch):
    sdk = Sdk(LowLevel())
    monkeypatch.setattr(docker_engine, "client", lambda: sdk)
    engine = DockerEngine()
    assert engine.sdk is sdk and engine.low is sdk.api


def test_sdk_errors_become_the_seams_own():
    engine = DockerEngine(Sdk(LowLevel(inspect_image=NotFound("No such image: x"), tag=NotFound("No such image: x"),
                                       remove_image=APIError("conflict: image is referenced in multiple repositories"))))
    assert engine.inspect("x") is None
    with pytest.raises(ImageMissing, match="no such image: x"):
        engine.tag("x", "ns/img", "1")
    with pytest.raises(EngineRefused, match="APIError: conflict") as refused:
        engine.remove("x")
    assert refused.value.message.startswith("APIError: ")  # shown as the SDK's error was
    assert docker_engine.describe(refused.value) == refused.value.message
    assert docker_engine.describe(RuntimeError("boom")) == "RuntimeError: boom"


def test_an_error_while_a_stream_is_read_is_translated_too():
    def events():
        yield {"status": "Pushing"}
        raise APIError("500 Server Error")

    engine = DockerEngine(Sdk(LowLevel(push=events())))
    stream = engine.push("ns/img", "1", None)
    assert next(stream) == {"status": "Pushing"}
    with pytest.raises(EngineRefused, match="500 Server Error"):
        next(stream)


def test_untag_keeps_parents_and_remove_prunes():
    low = LowLevel(remove_image=None, tag=True)
    engine = DockerEngine(Sdk(low))
    engine.untag("ns/img:1")
    engine.remove(A)
    engine.tag(A, "ns/img", "2")
    assert low.calls == [("remove_image", ("ns/img:1",), {"noprune": True}), ("remove_image", (A,), {}),
                         ("tag", (A, "ns/img", "2"), {"force": True})]


class ExitingContainer:
    """A container that exits with `code`, having written `stdout` and `stderr`; removed once read."""

    def __init__(self, code: int, stdout: bytes, stderr: bytes):
        self.code, self.stdout, self.stderr, self.removed = code, stdout, stderr, False

    def start(self):
        pass

    def wait(self, timeout=None):
        assert timeout  # a hung command must not hang the task
        return {"StatusCode": self.code}

    def logs(self, stdout=True, stderr=True):
        return (self.stdout if stdout else b"") + (self.stderr if stderr else b"")

    def remove(self, force=False):
        self.removed = True


def run_output_of(container: ExitingContainer) -> bytes:
    class Containers:
        def create(self, *args, **kwargs):
            return container

    sdk = Sdk(LowLevel())
    sdk.containers = Containers()
    return DockerEngine(sdk).run_output("img", ["python"])


def test_a_command_that_fails_in_an_image_is_container_failed_with_its_stderr():
    container = ExitingContainer(1, b"partial\n", b"ImportError: x\n")
    with pytest.raises(ContainerFailed) as failed:
        run_output_of(container)
    assert failed.value.stderr == b"ImportError: x\n" and container.removed


def test_a_command_s_output_is_read_whole_once_it_exited_and_the_container_goes():
    container = ExitingContainer(0, b"x" * 200_000, b"warning\n")
    assert run_output_of(container) == b"x" * 200_000 and container.removed


# --- the fake is as strict as the engine -------------------------------------------------------------------


def test_the_fake_refuses_to_tag_or_remove_an_image_it_does_not_have():
    engine = FakeEngine()
    with pytest.raises(ImageMissing):
        engine.tag(A, "ns/img", "1")
    with pytest.raises(ImageMissing):
        engine.remove(A)
    with pytest.raises(ImageMissing):
        engine.untag("ns/img:1")


def test_the_fake_refuses_to_remove_by_id_an_image_named_in_two_repositories():
    engine = FakeEngine()
    engine.add(A, {}, ["ns/a:1", "other/a:1"])
    with pytest.raises(EngineRefused, match="referenced in multiple repositories"):
        engine.remove(A)
    assert engine.tags_of(A) == ["ns/a:1", "other/a:1"]
    engine.untag("other/a:1")
    engine.remove(A)  # one name left: the engine drops it with the image
    assert not engine.has(A) and engine.refs == {}


def test_the_fake_refuses_to_remove_a_parent_or_an_image_a_container_uses():
    engine = FakeEngine()
    engine.add(A, {}, [])
    engine.add(B, {}, ["ns/b:1"], parent=A)
    with pytest.raises(EngineRefused, match="dependent child images"):
        engine.remove(A)
    engine.run_container(B)
    with pytest.raises(EngineRefused, match="being used by a container"):
        engine.remove(B)
    with pytest.raises(EngineRefused, match="container is using its referenced image"):
        engine.untag("ns/b:1")  # its last name: the engine wants it forced
    assert engine.image_ids() == {A, B}


def test_the_fakes_last_untag_deletes_the_image_and_remove_prunes_its_untagged_parent():
    engine = FakeEngine()
    engine.add(A, {}, [])
    engine.add(B, {}, ["ns/b:1", "ns/b:latest"], parent=A)
    engine.add(C, {}, ["ns/c:1"], parent=A)
    engine.untag("ns/b:1")
    assert engine.has(B)  # still named
    engine.untag("ns/b:latest")
    assert not engine.has(B) and engine.has(A)  # untag never prunes
    engine.remove("ns/c:1")
    assert engine.image_ids() == set()  # the parent went with its last child


def test_a_repositorys_digest_references_go_with_its_last_tag():
    engine = FakeEngine()
    engine.add(A, {}, ["reg/ns/a:1", "ns/a:1"])
    engine.refs["reg/ns/a@sha256:" + "f" * 64] = A
    engine.untag("reg/ns/a:1")
    assert engine.refs == {"ns/a:1": A}


def test_a_load_streams_any_iterable_as_the_archive_s_bytes_never_as_a_list():
    """docker-py sends a list body as form fields: a re-stamped config loaded as [archive] failed every build."""
    low = LowLevel(load_image=iter([{"stream": "Loaded image ID: sha256:x"}]))
    events = list(DockerEngine(Sdk(low)).load([b"archive"]))
    (name, args, _), = low.calls
    assert name == "load_image" and not isinstance(args[0], list) and list(args[0]) == [b"archive"]
    assert events == [{"stream": "Loaded image ID: sha256:x"}]
