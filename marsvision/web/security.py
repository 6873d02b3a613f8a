"""Who may ask, and what a browser may do with the answers: ASGI middleware in front of every route.

- ``HostCheck``: the Host header must be one of the allowed hosts (Django's ``ALLOWED_HOSTS``), else 400:
  a DNS-rebinding page (attacker.example resolved to 127.0.0.1) sends its own name as Host.
- ``WriteGate``: a write (``is_write``) is authenticated before its body is read (a 200 MB body on the
  label PUT reached 723 MB of RSS before its 401), and, when it carries an Origin, that Origin must be this
  server (else 403): with anonymous writes another site's page could post to a loopback archive.
- ``SecurityHeaders``: OWASP's secure headers on every answer; a restrictive CSP with
  ``frame-ancestors 'none'``, and ``nosniff`` so that no file is ever read as HTML.
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs, urlsplit

from fastapi.responses import JSONResponse

from .settings import Settings

# The page: scripts and styles from /static only (style attributes are set by the page's scripts); images
# from the API; no plugins, no frames, no foreign form targets.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# /docs and /redoc: FastAPI's pages load Swagger UI / ReDoc from jsDelivr and start them with an inline script.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com; "
    "worker-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")
HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), interest-cohort=()"),
]


def _reply(status: int, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


def host_name(host: str) -> str:
    """The name of a Host header value, without its port (``[::1]:8000`` → ``::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class HostCheck:
    def __init__(self, app, allowed: tuple[str, ...]):
        self.app, self.any = app, "*" in allowed
        self.allowed = {host_name(h) for h in allowed}

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket") and not self.any:
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if host_name(host) not in self.allowed:
                reply = _reply(400, f"Host {host[:100]!r} is not served here (serve --allowed-hosts)")
                return await reply(scope, receive, send)
        return await self.app(scope, receive, send)


def is_write(scope) -> bool:
    """The requests that change the archive: a label, an activation, an upload kept with ``store=true``."""
    method, path = scope["method"], scope["path"]
    if method == "PUT" and path.startswith("/api/images/") and path.endswith("/label"):
        return True
    if method == "POST" and path.startswith("/api/models/") and path.endswith("/activate"):
        return True
    if method == "POST" and path == "/api/classify":
        store = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("store", ["false"])[-1]
        return store.lower() in ("1", "true", "yes", "on", "t", "y")
    return False


def write_refusal(settings: Settings, authorization: str) -> tuple[int, str, dict] | None:
    """Why a write is refused (status, detail, headers), or None when it may go on: the bearer token when
    one is configured; without one, only with anonymous writes allowed."""
    if settings.token is None:
        if settings.allow_anonymous_writes:
            return None
        return (
            403,
            "writes are disabled: start the server with --token-file or $MARSVISION_TOKEN "
            "(or --allow-anonymous-writes)",
            {},
        )
    if authorization.startswith("Bearer ") and hmac.compare_digest(
        authorization[7:].strip().encode(), settings.token.encode()
    ):
        return None
    return 401, "this write needs the header 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"}


class WriteGate:
    def __init__(self, app, settings: Settings):
        self.app, self.settings = app, settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not is_write(scope):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        origin = headers.get(b"origin", b"").decode("latin-1")
        if origin and origin != "null":
            if urlsplit(origin).netloc.lower() != headers.get(b"host", b"").decode("latin-1").lower():
                reply = _reply(403, f"a write from another origin ({origin[:100]}) is refused")
                return await reply(scope, receive, send)
        elif origin == "null":  # a sandboxed frame or a file: page
            return await _reply(403, "a write from an opaque origin is refused")(scope, receive, send)
        refusal = write_refusal(self.settings, headers.get(b"authorization", b"").decode("latin-1"))
        if refusal is not None:  # before a byte of the body is read
            status, detail, extra = refusal
            return await _reply(status, detail, Connection="close", **extra)(scope, receive, send)
        return await self.app(scope, receive, send)


class SecurityHeaders:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        csp = (DOCS_CSP if scope["path"] in DOCS_PATHS else PAGE_CSP).encode()

        async def with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in [*HEADERS, (b"content-security-policy", csp)] if k not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return await self.app(scope, receive, with_headers)
