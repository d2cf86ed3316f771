"""Verification: a smoke test inside the new image, then the tag move.

The final tags are moved only after the smoke test passed, so an image under a
version tag has always been verified, and a failed build or smoke test leaves
the previous image under that tag untouched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from .. import interrupts
from ..model.failures import Cause, Diagnosis, StepFailed, read_smoke_output

PIN_REPOSITORY = "ingestion-factory-pin/image"
SMOKE_COMMAND = ["python", "main.py", "--check"]
SMOKE_TIMEOUT_S = 180
# A smoke test's CPU weight next to BuildKit's (1024 for all the builds together, one cgroup): a build is
# what the next builds wait for, a smoke test ends a branch, so a build comes first when both want the CPU
# and smoke tests take what is left. Alone, a smoke test still gets all the CPU.
SMOKE_TEST_CPU_SHARES = 256

# The docker SDK ships no types: its client (docker.DockerClient) and containers are Any here.
DockerClient = Any
Container = Any


class Tagger(Protocol):
    """The one thing the tag moves ask of an engine (docker_engine.Engine has it; that module imports this one)."""

    def tag(self, image: str, repository: str, tag: str) -> None: ...


class SmokeFailed(StepFailed):
    def __init__(self, diagnosis: Diagnosis):
        super().__init__(diagnosis, "the image was built but not tagged; fix the fragment or check_modules")


@dataclass(frozen=True)
class SmokeResult:
    exit_code: int
    output: str
    seconds: float


def pin_ref(image_id: str, repository: str = PIN_REPOSITORY) -> str:
    """A tag derived from the image ID, so BuildKit can start FROM that exact image.

    BuildKit's built-in frontend resolves `FROM sha256:...` against Docker Hub,
    so the ID is spelled as a tag that nothing else ever moves.
    """
    return f"{repository}:{image_id.removeprefix('sha256:')}"


def pin(engine: Tagger, image_id: str, repository: str = PIN_REPOSITORY) -> str:
    """Tag the image by its ID (in a repository of the caller's) and return that reference."""
    ref = pin_ref(image_id, repository)
    engine.tag(image_id, repository, ref.rpartition(":")[2])
    return ref


def _kill(container: Container) -> None:
    try:
        container.kill()
    except Exception:  # already exited, or the engine is gone
        pass


# The smoke-test containers of this run, so an interrupt kills them (their wait then returns) instead of
# waiting them out.
SMOKE_TESTS = interrupts.Running(_kill, lambda why: SmokeFailed(Diagnosis(Cause.INTERRUPTED, why)))


def end_smoke_tests(reason: str) -> None:
    """Interrupt: kill every smoke test this process runs, and start none."""
    SMOKE_TESTS.end_all(reason)


def smoke_test(api: DockerClient, image_id: str, command: list[str] | None = None, *,
               timeout_s: float = SMOKE_TIMEOUT_S) -> SmokeResult:
    """Run `python main.py --check` with no network in the image; raise SmokeFailed on failure."""
    command = command or SMOKE_COMMAND
    shown = " ".join(command)
    start = time.monotonic()
    container = api.containers.create(image_id, command, network_mode="none", detach=True,
                                      cpu_shares=SMOKE_TEST_CPU_SHARES)
    try:
        SMOKE_TESTS.start(lambda: container)
        container.start()
        try:
            status = container.wait(timeout=timeout_s)
        except Exception as exc:
            if not timed_out(exc):  # the engine went away, or answered with an error
                raise SmokeFailed(Diagnosis(Cause.ENGINE, f"waiting for the smoke test failed: "
                                                          f"{type(exc).__name__}: {exc}", command=shown)) from None
            container.kill()
            raise SmokeFailed(Diagnosis(Cause.SMOKE_TIMEOUT, f"smoke test did not finish in {timeout_s:.0f}s",
                                        command=shown)) from None
        output = container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        SMOKE_TESTS.forget(container)
        try:
            container.remove(force=True)
        except Exception:  # the engine is gone: the error that matters was raised above
            pass
    result = SmokeResult(int(status.get("StatusCode", 1)), output, time.monotonic() - start)
    if SMOKE_TESTS.ended:  # killed by the interrupt: not the image's fault
        raise SmokeFailed(Diagnosis(Cause.INTERRUPTED, f"ended: {SMOKE_TESTS.ended}", command=shown))
    if result.exit_code != 0:
        raise SmokeFailed(read_smoke_output(result.exit_code, output, shown))
    return result


def timed_out(exc: BaseException) -> bool:
    """Whether waiting ended because the timeout passed, not because the engine failed.

    Over the engine's unix socket, requests reports a read timeout as a ConnectionError wrapping
    urllib3's ReadTimeoutError; over TCP as ReadTimeout.
    """
    from requests.exceptions import ReadTimeout  # the HTTP stack loads with the docker SDK, not at start-up
    from urllib3.exceptions import ReadTimeoutError

    seen: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending:
        error = pending.pop()
        if any(error is known for known in seen):
            continue
        seen.append(error)
        if isinstance(error, (ReadTimeout, ReadTimeoutError, TimeoutError)):
            return True
        pending += [arg for arg in error.args if isinstance(arg, BaseException)]
        pending += [linked for linked in (error.__cause__, error.__context__) if linked is not None]
    return False


def move_tags(engine: Tagger, image_id: str, repository: str, tags: list[str]) -> list[str]:
    """Point every tag at the verified image (through the engine seam); returns the refs now pointing at it."""
    refs: list[str] = []
    for tag in tags:
        engine.tag(image_id, repository, tag)
        refs.append(f"{repository}:{tag}")
    return refs
