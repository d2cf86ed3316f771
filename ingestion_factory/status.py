"""Status words with the style they are shown in, one enum per kind of status (plan, build, push)."""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """A status is its word (so JSON reports and f-strings show the word) plus the style it is shown in
    (a rich style name; the command layer shows it: cli/report.py styled()).

    Subclasses list members as `NAME = "word", "style"`; adding a status is adding one line.
    """

    style: str

    def __new__(cls, word: str, style: str = ""):
        member = str.__new__(cls, word)
        member._value_ = word
        member.style = style
        return member

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)
