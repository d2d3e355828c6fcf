"""The server's optional bearer token: one check for every endpoint that needs it.

`featsync serve --auth-token-file F` (and `featsync ui`) read the token from a file, never
from the command line or the environment, so it does not show in `ps` or a worker's
environment. Reads (`/get-online-features`) stay open unless configured otherwise; writes
(`/push`, `/write-to-online-store`) and the UI pages require the token when one is set.
Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI reads token files before it knows the serve extra is there
    from starlette.responses import Response

COOKIE = "featsync_token"  # the UI keeps a signed-in browser's token in this cookie (HttpOnly, SameSite=Strict)


def cookie_value(token: str) -> str:
    """The token as the UI cookie holds it: percent-encoded, so every character is one a cookie
    value holds unquoted. Raw, a token with `/ + = ; , "` or `\\` (any base64 token) was sent
    quoted (`"Zm9v/YmF6+cXV4="`, Python's cookie quoting) and never matched again: the login looped."""
    from urllib.parse import quote

    return quote(token, safe="")


def _from_cookie(value: str) -> str:
    """The token in a cookie value that `cookie_value` wrote."""
    from urllib.parse import unquote

    return unquote(value)


def given_token(scope: dict, cookie: bool = False) -> str | None:
    """The token a request carries: `Authorization: Bearer <token>`, else (when `cookie`) the UI cookie."""
    headers = dict(scope.get("headers") or [])
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if cookie:
        for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return _from_cookie(value)
    return None


def token_matches(given: str | None, token: str | None) -> bool:
    """True when no token is configured, or `given` equals it (constant-time)."""
    if token is None:
        return True
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def authorized(scope: dict, token: str | None, cookie: bool = False) -> bool:
    """Whether a request (its ASGI scope, or `request.scope`) may pass a check on `token`."""
    if token is None:  # no token configured: the headers need not be looked at (every /push asks)
        return True
    return token_matches(given_token(scope, cookie), token)


def unauthorized() -> Response:
    """401 with `WWW-Authenticate: Bearer`, in the JSON error shape of the server."""
    from starlette.responses import Response

    response = Response('{"detail":"missing or wrong bearer token"}', 401, media_type="application/json")
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def read_token_file(path: str) -> str:
    """The token in `path` (surrounding whitespace stripped), refusing a file that cannot hold a secret.

    A missing or empty file, or one that every user of the machine can read, is a
    UsageError naming the file: a token anyone can read protects nothing.
    """
    import os
    import stat

    from featsync.errors import UsageError

    try:
        mode = os.stat(path).st_mode
        with open(path, encoding="utf-8") as file:
            token = file.read().strip()
    except FileNotFoundError:
        raise UsageError(f"--auth-token-file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--auth-token-file {path}: cannot read it ({exc})") from None
    if mode & stat.S_IROTH:
        raise UsageError(f"--auth-token-file {path}: every user can read it; chmod o-r (or 600) it first")
    if not token:
        raise UsageError(f"--auth-token-file {path}: the file is empty")
    if any(not "!" <= c <= "~" for c in token):  # a header is latin-1: a non-ASCII token could never be sent
        raise UsageError(
            f"--auth-token-file {path}: the token must be one line of printable ASCII characters (! to ~), "
            "without spaces or non-ASCII letters (an HTTP header cannot carry those as the token)"
        )
    return token
