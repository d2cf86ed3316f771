"""The one error type the tasks turn into a clear message and an exit code."""

from __future__ import annotations


class FactoryError(Exception):
    """A user-facing failure: one line saying what went wrong, one hint saying what to do."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, *, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def render(self) -> str:
        text = f"error: {self.message}"
        if self.hint:
            text += f"\nhint: {self.hint}"
        return text


class ConfigError(FactoryError):
    """Bad settings, a bad connector directory or a bad name given on the command line."""

    exit_code = 2


class DockerUnavailable(FactoryError):
    """No daemon, or no BuildKit-capable docker CLI."""

    exit_code = 3
