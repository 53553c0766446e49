"""Errors raised by the EQL parser and evaluator."""

from __future__ import annotations


class EqlError(ValueError):
    """Base class of every EQL error; positions are 1-based and relative to the query text."""

    def __init__(
        self,
        message: str,
        line: int | None = None,
        column: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.hint = hint

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}: " if self.line is not None else ""
        tail = f" (hint: {self.hint})" if self.hint else ""
        return f"{where}{self.message}{tail}"

    def __reduce__(self) -> tuple[object, ...]:
        # Keep the extra arguments when errors cross process boundaries (pickling).
        return (type(self), (self.message, self.line, self.column, self.hint))


class EqlSyntaxError(EqlError):
    """The query is not valid Elasticsearch EQL (Elasticsearch would reject it)."""

    line: int
    column: int

    def __init__(self, message: str, line: int, column: int, hint: str | None = None) -> None:
        super().__init__(message, line, column, hint)


class EqlUnsupportedError(EqlError):
    """The query is valid Elasticsearch EQL but this project cannot handle it (e.g. offline)."""
