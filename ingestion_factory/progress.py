"""How the library says what it is doing while a command runs, without printing (the command layer shows it).

Workflows take a `Progress` and call it; cli/console_progress.py shows it on a terminal (a live bar for bytes,
a status line) or as timestamped lines in a log. `Quiet` is for callers that want nothing shown.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

Advance = Callable[[int], None]  # bytes done since the last call
Update = Callable[[str], None]  # a new text for a status line


class Progress(Protocol):
    def say(self, text: str) -> None: ...  # a line of plain text
    def warn(self, text: str) -> None: ...  # something to act on that does not stop the command
    def fail(self, text: str) -> None: ...  # one part failed; the command goes on or reports at the end
    def transfer(self, what: str, total: int | None = None) -> AbstractContextManager[Advance]: ...
    def status(self, text: str) -> AbstractContextManager[Update]: ...


class Quiet:
    """A Progress that shows nothing."""

    def say(self, text: str) -> None:
        pass

    warn = fail = say

    def transfer(self, what: str, total: int | None = None) -> AbstractContextManager[Advance]:
        return nullcontext(lambda count: None)

    def status(self, text: str) -> AbstractContextManager[Update]:
        return nullcontext(lambda text: None)
