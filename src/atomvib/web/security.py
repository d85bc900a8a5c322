"""ASGI middleware of the app: access token, request size limit, cross-site request guard, security headers.

* Token (``--token``): every request needs it, as ``Authorization: Bearer TOKEN``, or the cookie the app sets
  when a page is opened once with ``?token=TOKEN`` (HttpOnly, SameSite=Strict); otherwise 401. Compared in
  constant time. No token: the app is open to whoever reaches the port (127.0.0.1 by default).
* Users (``--users FILE``, :mod:`atomvib.web.users`): the same, with a token per user; the request then
  carries its user's name (``scope["atomvib.user"]``, :func:`request_user`) and the app shows each user only
  their own jobs and results. Without users the name is None: everything is shared.
* Size: a request body longer than the limit is refused with 413 before it is read into memory or onto disk
  (by its Content-Length, and by counting when it is sent in chunks).
* Cross-site requests: a state-changing request (POST, PUT, DELETE) must carry the header ``X-Atomvib: 1``
  (the app's own pages send it; a form or image on another site cannot, without a CORS preflight the app never
  answers), so another site open in the same browser cannot start calculations on a local app.
* Headers: a Content-Security-Policy that allows only the app's own scripts (no CDN, no inline script),
  ``nosniff``, no framing, no referrer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import parse_qsl, urlencode

COOKIE = "atomvib_token"
#: where the middleware leaves the name of the request's user (None: no users, everything shared)
USER_KEY = "atomvib.user"
CSRF_HEADER = "x-atomvib"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'; "
       "base-uri 'none'; form-action 'self'")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", CSP.encode()),
]


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _send_json(send, status: int, payload: dict, extra_headers=()):
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *SECURITY_HEADERS, *extra_headers]})
    await send({"type": "http.response.body", "body": body})


def cookie_value(token: str) -> str:
    """What the cookie holds: a digest of the token (the token itself never sits in the browser's cookie jar)."""
    return hmac.new(token.encode(), b"atomvib-web-cookie", hashlib.sha256).hexdigest()


class SecurityHeaders:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def wrapped(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [h for h in SECURITY_HEADERS if h[0] not in names]
            await send(message)

        return await self.app(scope, receive, wrapped)


def request_user(request) -> str | None:
    """The user a request was authenticated as (``--users``), or None without users."""
    return request.scope.get(USER_KEY)


class TokenAuth:
    """401 for requests without the token, or without a user's token (``users``); ``?token=`` on a page sets
    the cookie. ``users`` (:class:`atomvib.web.users.Users`) and ``token`` exclude each other."""

    def __init__(self, app, token: str | None = None, users=None):
        self.app = app
        self.token = token or None
        self.users = users
        if self.token and self.users is not None:
            raise ValueError("give a token or users, not both")
        self.cookie = cookie_value(token) if token else None

    def _ok(self, supplied: str | None, cookie: bool = False) -> bool:
        if not supplied:
            return False
        want = self.cookie if cookie else self.token
        return hmac.compare_digest(supplied.encode(), want.encode())

    def _who(self, supplied: str | None, cookie: bool = False):
        """(accepted, user name or None) for a token or cookie value."""
        if self.users is None:
            return self._ok(supplied, cookie), None
        name = self.users.who_by_cookie(supplied) if cookie else self.users.who(supplied)
        return name is not None, name

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope[USER_KEY] = None
        if self.token is None and self.users is None:
            return await self.app(scope, receive, send)
        h = _headers(scope)
        auth = h.get("authorization", "")
        if auth.lower().startswith("bearer "):
            ok, name = self._who(auth[7:].strip())
            if ok:
                scope[USER_KEY] = name
                return await self.app(scope, receive, send)
        cookies = dict(p.strip().split("=", 1) for p in h.get("cookie", "").split(";") if "=" in p)
        ok, name = self._who(cookies.get(COOKIE), cookie=True)
        if ok:
            scope[USER_KEY] = name
            return await self.app(scope, receive, send)
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [v for k, v in query if k == "token"]
        ok, name = self._who(given[-1]) if given else (False, None)
        if ok and scope.get("method") == "GET":
            # the URL printed by `atomvib serve`: set the cookie, then show the page without the token in its URL
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = scope.get("path", "/") + (f"?{rest}" if rest else "")
            value = self.users.cookie_for(name) if self.users is not None else self.cookie
            cookie = f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict"
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", location.encode()), (b"set-cookie", cookie.encode()),
                                    (b"content-length", b"0"), *SECURITY_HEADERS]})
            await send({"type": "http.response.body", "body": b""})
            return
        what = "your own access token" if self.users is not None else "its access token"
        await _send_json(send, 401, {"error": f"this atomvib app needs {what} (fix: open the app's URL with "
                                              "?token=YOUR_TOKEN once, or send 'Authorization: Bearer TOKEN')"},
                         [(b"www-authenticate", b'Bearer realm="atomvib"')])


class BodyLimit:
    """413 for a request body over ``max_bytes`` (checked on Content-Length, then while it streams)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = int(max_bytes)

    def _message(self) -> dict:
        return {"error": f"the upload is larger than this app's limit of {self.max_bytes / 1e6:.1f} MB "
                         "(fix: upload a smaller file, or start the app with a larger --max-upload-mb)"}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        length = _headers(scope).get("content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                too_big = True
            if too_big:
                return await _send_json(send, 413, self._message())
        seen = 0
        over = False  # the body went over the limit: the app is told the client left; the client gets 413
        replaced = False

        async def counted():
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message):
            nonlocal replaced
            if over:
                if not replaced and message["type"] == "http.response.start":
                    replaced = True
                    await _send_json(send, 413, self._message())
                return  # whatever the app answers to a vanished client is dropped
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not over:
                raise  # a real error of the app: not ours to hide
        if over and not replaced:
            await _send_json(send, 413, self._message())


class CrossSiteGuard:
    """403 for a state-changing request without ``X-Atomvib: 1`` (see the module docstring)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") not in ("GET", "HEAD", "OPTIONS"):
            if _headers(scope).get(CSRF_HEADER) != "1":
                return await _send_json(send, 403, {"error": "request refused: it did not come from the app's own "
                                                             "pages (fix: send the header 'X-Atomvib: 1')"})
        return await self.app(scope, receive, send)
