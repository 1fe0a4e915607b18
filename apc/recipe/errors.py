"""Problems found in recipe and site files, reported with file, line and field path."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One problem in one file.

    ``line`` is 1-based (``None`` when the file could not be read at all);
    ``path`` is the dotted field path (``limits.oxide_feed.operator``,
    ``units[0].recipe``), empty for problems of the whole file.
    """

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


class RecipeError(Exception):
    """A recipe or site file was refused; ``problems`` lists every reason."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)
