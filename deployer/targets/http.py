"""HTTP plumbing shared by target clients: auth that never leaks, TLS, timeouts, bounded retries.

Retries: 429/502/503/504 and connection errors are retried with exponential backoff and jitter,
honouring `Retry-After`, within a total time budget. 401/403 and TLS failures are never retried:
repeating them cannot succeed and hammering an auth endpoint can lock accounts.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3

from deployer.targets.base import TargetError

log = logging.getLogger("dac.http")

RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Looked up at call time so tests can record the backoff schedule instead of waiting it out.
_sleep = time.sleep


class HttpError(TargetError):
    """A non-success HTTP answer, with the server's own message."""

    def __init__(
        self, message: str, *, status_code: int | None = None, body: Any = None, hint: str | None = None
    ):
        super().__init__(message, hint)
        self.status_code = status_code
        self.body = body


class AuthError(HttpError):
    """The server rejected the credentials (401) or the user lacks privileges (403)."""


class ConnectError(TargetError):
    """The server could not be reached."""


class TlsError(TargetError):
    """The server's certificate could not be verified."""


class ApiKeyAuth(requests.auth.AuthBase):
    """`Authorization: ApiKey <encoded>`; the key never appears in repr or str."""

    def __init__(self, encoded: str) -> None:
        self._header = f"ApiKey {encoded}"

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = self._header
        return r

    def __repr__(self) -> str:
        return "ApiKeyAuth(<redacted>)"

    __str__ = __repr__


class BasicAuth(requests.auth.AuthBase):
    """HTTP basic auth whose password never appears in repr or str."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._header = f"Basic {token}"

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = self._header
        return r

    def __repr__(self) -> str:
        return f"BasicAuth({self.username!r}, <redacted>)"

    __str__ = __repr__


def encode_api_key(value: str) -> str:
    """Return the base64 `id:key` form Kibana expects; an already encoded key passes through."""
    value = value.strip()
    if ":" in value:
        return base64.b64encode(value.encode()).decode("ascii")
    return value


def auth_from_env(
    *,
    api_key_env: str,
    username_env: str,
    password_env: str,
    api_key_file: str | None = None,
    env: Mapping[str, str],
    service: str,
) -> requests.auth.AuthBase:
    """Pick credentials: API key file, then API key env var, then username/password env vars."""
    if api_key_file:
        try:
            key = Path(api_key_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise TargetError(f"cannot read the API key file {api_key_file}: {e.strerror}") from None
        if not key:
            raise TargetError(f"the API key file {api_key_file} is empty")
        return ApiKeyAuth(encode_api_key(key))
    key = env.get(api_key_env, "").strip()
    if key:
        return ApiKeyAuth(encode_api_key(key))
    user, password = env.get(username_env, ""), env.get(password_env, "")
    if user and password:
        return BasicAuth(user, password)
    raise TargetError(
        f"no {service} credentials",
        hint=f"set {api_key_env} (an API key), or {username_env} and {password_env}, or pass --api-key-file",
    )


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry transient failures."""

    retries: int = 4
    base_delay: float = 0.5
    max_delay: float = 10.0
    total_budget: float = 60.0
    # Connection refused is usually not transient (nothing listening): retry briefly, fail fast.
    connect_retries: int = 2

    def backoff(self, attempt: int) -> float:
        """Return the delay before retry number `attempt` (0-based), with jitter."""
        ceiling = min(self.max_delay, self.base_delay * (2**attempt))
        # "Equal jitter": at least half the exponential delay, so concurrent clients spread out.
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def safe_url(url: str) -> str:
    """Validate a base URL and return it without a trailing slash; refuse credentials inside it."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetError(
            f"invalid URL {parts.scheme or '?'}://{parts.hostname or '?'}",
            hint="expected http(s)://host:port",
        )
    if parts.username or parts.password:
        # Never echo the URL here: it holds a secret.
        raise TargetError(
            "credentials embedded in the target URL are not accepted",
            hint="remove user:password@ from the URL and use environment variables or --api-key-file",
        )
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_message(resp: requests.Response) -> tuple[str, Any]:
    """Return the server's message and parsed body from an error response (both Kibana shapes)."""
    try:
        body = resp.json()
    except ValueError:
        text = resp.text.strip()
        return (text[:300] or resp.reason or f"HTTP {resp.status_code}"), None
    if isinstance(body, dict):
        msg = body.get("message") or body.get("error") or resp.reason
        if isinstance(msg, dict):  # Elasticsearch-style {"error": {"reason": ...}}
            msg = msg.get("reason") or msg.get("type")
        return str(msg), body
    return str(body)[:300], body


class HttpClient:
    """A requests session bound to one base URL, with auth, TLS settings, timeouts and retries."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: requests.auth.AuthBase | None,
        verify: bool | str = True,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        service: str = "server",
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.base_url = safe_url(base_url)
        self.service = service
        self.retry = retry or RetryPolicy()
        self.timeout = (connect_timeout, timeout)
        self._sleep = sleep
        self._session = requests.Session()
        self._session.auth = auth
        self._verify = verify
        if verify is False:
            # The user opted out explicitly; the CLI prints one warning instead of one per request.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self._session.headers.update(headers or {})
        self.request_count = 0

    def __repr__(self) -> str:
        return f"HttpClient({self.base_url!r})"

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        files: Any = None,
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
        timeout: float | None = None,
    ) -> requests.Response:
        """Send one logical request (retrying transient failures) and return the response.

        Statuses in `ok` are returned; others raise `HttpError` (or `AuthError` for 401/403).
        """
        url = self.base_url + path
        policy = self.retry
        deadline = time.monotonic() + policy.total_budget
        attempt = 0
        connect_failures = 0
        tmo = (self.timeout[0], timeout) if timeout else self.timeout
        while True:
            try:
                self.request_count += 1
                resp = self._session.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    files=files,
                    headers=headers,
                    timeout=tmo,
                    # Passed per request: a session-level value would lose to REQUESTS_CA_BUNDLE,
                    # silently undoing --ca-cert or --insecure.
                    verify=self._verify,
                )
            except requests.exceptions.SSLError as e:
                raise TlsError(
                    f"TLS verification failed for {self.base_url}: {_ssl_reason(e)}",
                    hint="pass --ca-cert FILE with the CA that signed the server certificate, "
                    "or --insecure to skip verification (not for production)",
                ) from None
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
                connect_failures += 1
                kind = "timed out" if isinstance(e, requests.exceptions.Timeout) else "connection failed"
                delay = policy.backoff(attempt)
                if connect_failures > policy.connect_retries or time.monotonic() + delay > deadline:
                    raise ConnectError(
                        f"cannot reach {self.service} at {self.base_url}: {kind} ({_conn_reason(e)})",
                        hint="check the URL and that the server is running and reachable from here",
                    ) from None
                log.info("%s %s: %s, retrying in %.1fs", method, path, kind, delay)
                (self._sleep or _sleep)(delay)
                attempt += 1
                continue
            log.debug("%s %s -> %s", method, path, resp.status_code)
            if resp.status_code in ok:
                return resp
            if resp.status_code in RETRY_STATUSES and attempt < policy.retries:
                delay = _retry_after(resp)
                delay = policy.backoff(attempt) if delay is None else min(delay, policy.max_delay * 3)
                if time.monotonic() + delay <= deadline:
                    log.info("%s %s: HTTP %s, retrying in %.1fs", method, path, resp.status_code, delay)
                    (self._sleep or _sleep)(delay)
                    attempt += 1
                    continue
            raise self._error(method, path, resp)

    def _error(self, method: str, path: str, resp: requests.Response) -> HttpError:
        message, body = error_message(resp)
        code = resp.status_code
        if code == 401:
            return AuthError(
                f"{self.service} rejected the credentials (HTTP 401) at {self.base_url}",
                status_code=code,
                body=body,
                hint="check the API key or username/password: it may be wrong, expired or revoked",
            )
        if code == 403:
            return AuthError(
                f"{self.service} denied {method} {path} (HTTP 403): {message}",
                status_code=code,
                body=body,
                hint="the credentials lack a privilege this command needs",
            )
        return HttpError(f"{method} {path} failed (HTTP {code}): {message}", status_code=code, body=body)


def _ssl_reason(e: Exception) -> str:
    text = str(e)
    for marker in (
        "CERTIFICATE_VERIFY_FAILED",
        "certificate verify failed",
        "hostname mismatch",
        "WRONG_VERSION",
    ):
        if marker.lower() in text.lower():
            i = text.lower().index(marker.lower())
            return text[i : i + 120].split("'")[0].split(")")[0].strip()
    return "the certificate could not be verified"


def _conn_reason(e: Exception) -> str:
    text = str(e)
    for marker in (
        "Connection refused",
        "Name or service not known",
        "nodename nor servname",
        "timed out",
        "No route to host",
        "Temporary failure in name resolution",
        "Connection reset",
    ):
        if marker.lower() in text.lower():
            return marker.lower()
    return type(e).__name__
