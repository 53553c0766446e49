"""Errors raised while fetching, assembling, starting or stopping a local cluster."""

from __future__ import annotations


class ClusterError(Exception):
    """A problem with a local cluster: what went wrong, and the next step to fix it."""

    def __init__(self, message: str, hint: str | None = None, log_tail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.log_tail = log_tail

    def __str__(self) -> str:
        parts = [self.message]
        if self.hint:
            parts.append(f"next step: {self.hint}")
        if self.log_tail:
            parts.append("last lines of the server log:\n" + self.log_tail)
        return "\n".join(parts)

    def to_dict(self) -> dict[str, str | None]:
        """Return the error as a JSON-ready dict."""
        return {"error": self.message, "hint": self.hint, "log_tail": self.log_tail}


class FetchError(ClusterError):
    """An artifact could not be downloaded or failed verification."""


class JavaNotFoundError(ClusterError):
    """No usable Java runtime for the engine."""


class PortInUseError(ClusterError):
    """A requested port on 127.0.0.1 is already taken."""


class PluginInstallError(ClusterError):
    """The engine's plugin CLI refused a plugin."""


class StartupError(ClusterError):
    """The server exited early or never became healthy."""
