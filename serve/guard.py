"""What every HTTP request passes before a route sees it: the API key, then the body's size.

A plain ASGI middleware, so it runs before FastAPI parses anything: a request without the key
gets 401 whatever its body (even malformed JSON) and whatever its path (the OpenAPI pages
included); a body larger than the limit gets 413 without being read past the limit (a
``Content-Length`` over it is refused at once, a chunked body once it crosses it). Both answers
say ``Connection: close``: the HTTP server (uvicorn, in Ray Serve's proxy) then closes the
connection once the answer is sent, instead of reading the rest of a body nobody wants to keep
the connection alive.
"""

from __future__ import annotations

import hmac
import json

__all__ = ["RequestGuard"]

_BODY_METHODS = frozenset(("POST", "PUT", "PATCH", "DELETE"))


class RequestGuard:
    """ASGI middleware; see the module docstring.

    Args:
        app: the ASGI app behind it.
        api_key: the bearer token every request needs; None leaves the API open.
        max_body_bytes: the largest request body accepted.
        open_paths: paths answered without the key (``/healthz``).
    """

    def __init__(self, app, api_key: str | None, max_body_bytes: int, open_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self._key = None if api_key is None else api_key.encode()
        self.max_body_bytes = max_body_bytes
        self.open_paths = open_paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        if self._key is not None and scope["path"] not in self.open_paths and not self._authorised(headers):
            await _answer(send, 401, "missing or wrong API key: send Authorization: Bearer <key>", {"www-authenticate": "Bearer"})
            return
        if scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _answer(send, 413 if length.isdigit() else 400, self._too_large() if length.isdigit() else "bad Content-Length")
            return
        body = await self._read(receive)
        if body is None:
            await _answer(send, 413, self._too_large())
            return
        await self.app(scope, _replay(body, receive), send)

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._key)

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_body_bytes} bytes"

    async def _read(self, receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit (the rest is never read)."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive):
    """A ``receive`` that hands the app the body already read, then waits on the client's."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    """The error, and the connection closed after it: the client may still be sending a body
    no one will read, and keeping the connection alive would mean reading it all."""
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
