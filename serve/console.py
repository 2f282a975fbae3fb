"""The web console: static files shipped in the package (``serve/static/``), no build step.

``GET /`` is the page, ``GET /ui/{file}`` its scripts, styles and icon. These files are public
(they hold no data); every value they show comes from the API with the key, which the page asks
for once and keeps in the tab's ``sessionStorage`` only, sending it as a bearer header.

Every response carries a Content-Security-Policy that allows scripts, styles, images and
connections from the service's own origin only (no inline script or style, no ``eval``, no
frames, no plugins), so a value that slipped into the page as markup could still not run; the
scripts insert every API value as text (``textContent``), never as HTML.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import Response
from starlette.exceptions import HTTPException

__all__ = ["CONTENT_SECURITY_POLICY", "ConsoleFiles"]

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".svg": "image/svg+xml"}  # fmt: skip
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated on every load: an upgraded service serves its own page
}


class ConsoleFiles:
    """The console's files, read once (a few tens of KB), by name; nothing outside the
    folder can be asked for (the names are a fixed set, not paths).

    Args:
        folder: where the files are (default: the package's ``static/``).
    """

    def __init__(self, folder: Path | None = None) -> None:
        folder = folder or Path(__file__).with_name("static")
        self.files = {f.name: (f.read_bytes(), _TYPES[f.suffix]) for f in sorted(folder.iterdir()) if f.is_file() and f.suffix in _TYPES}
        if "index.html" not in self.files:
            raise FileNotFoundError(f"the console's index.html is missing from {folder}")

    @property
    def paths(self) -> frozenset[str]:
        """The URL paths answered without the key."""
        return frozenset({"/", *(f"/ui/{name}" for name in self.files)})

    def mount(self, app: FastAPI) -> None:
        """``GET /`` and ``GET /ui/{name}`` on ``app`` (not in the OpenAPI schema)."""

        @app.get("/", include_in_schema=False)
        def console_page() -> Response:
            return self._answer("index.html")

        @app.get("/ui/{name}", include_in_schema=False)
        def console_file(name: str) -> Response:
            if name not in self.files:
                raise HTTPException(404, "no such console file")
            return self._answer(name)

    def _answer(self, name: str) -> Response:
        body, media_type = self.files[name]
        return Response(body, media_type=media_type, headers=_HEADERS)
