"""The collector's dashboard: fleet, queue, results and search fronts in a browser, served by
``edgec serve`` on the API's port.

The dashboard's own paths (``/``, ``/queue``, ``/results``, ``/search``, ``/login`` and the
fragments, charts, assets and actions below them) need a session cookie; every other path stays
the API behind its bearer-token guard. A browser gets a session by opening a one-time sign-in
link (printed by ``edgec serve`` at start, or by ``edgec dashboard``
with the admin token), and until then sees the sign-in page and no data. Pages are Jinja2
templates with everything escaped; a small script of ours (no inline script, no CDN) refreshes
their fragments; charts come from :mod:`edgec.plots`, the module ``edgec report --plot`` uses.

Modules: :mod:`.sessions` (sign-in links, sessions, CSRF), :mod:`.views` (what a page shows, read
from the record), :mod:`.pages` (the routes and templates), :mod:`.charts` (cached SVG charts).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import cookie_parser

from edgec.collector import API
from edgec.collector.dashboard.paths import PAGE_PATHS
from edgec.collector.dashboard.sessions import COOKIE, Sessions

#: what every dashboard answer carries: no inline script or style, nothing from elsewhere
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
           (b"cross-origin-opener-policy", b"same-origin"), (b"cross-origin-resource-policy", b"same-origin")]
MAX_FORM = 64 * 1024  # the dashboard's forms hold a CSRF token and nothing else
OPEN_PATHS = ("/login", "/static/")  # served without a session (no data in them)
OWN_PATHS = (*PAGE_PATHS, "/login", "/logout")
OWN_PREFIXES = ("/static/", "/fragments/", "/charts/", "/jobs/", "/devices/")
SIGN_IN_PATH = API + "/dashboard/sign-in"


#: the least time between two reads of the pages' rows while the record keeps changing
REREAD_EVERY_S = 5.0
#: while it keeps changing, the pages' reads and renders take at most this share of one core:
#: the next read waits until what the last ones cost is this share of the time since
REFRESH_SHARE = 0.0025
#: but a streaming record is shown at least this often, whatever a read costs
MAX_HOLD_S = 60.0


class Dashboard:
    """The dashboard of one collector: its sessions, its pages, and the API route that makes
    sign-in links.

    Args:
        settings: the collector's :class:`~edgec.collector.server.ServerSettings`.
        read: runs a function of a database connection on the read pool (awaitable).
        write: runs a function of a connection on the record's writer (awaitable).
        notify: wakes the long polls after a change (a cancelled job, a revoked device).
        forget: drops the cached credential checks (after a revocation).
        search_storage: an Optuna storage URL whose studies the Search page shows.
        store: the record (:class:`~edgec.collector.storage.store.Store`): what tells the pages
            that it changed.
    """

    def __init__(self, settings, read: Callable[..., Any], write: Callable[..., Any], *,
                 notify: Callable[[], None], forget: Callable[[], None], search_storage: str | None = None,
                 store=None):
        self.settings = settings
        self.read = read
        self.write = write
        self.notify = notify
        self.forget = forget
        self.search_storage = search_storage
        self.store = store
        self.sessions = Sessions()
        self.tls = False  # set by 'edgec serve': the session cookie is then Secure
        # while results stream in, the record changes between every two polls: the pages' rows
        # are then read again at most once per this many seconds (a first change after a quiet
        # spell shows at once), so an open dashboard's cost is per second, not per result
        self.reread_every_s = REREAD_EVERY_S
        self.refresh_share = REFRESH_SHARE  # 0: the interval alone
        self.max_hold_s = MAX_HOLD_S
        self.clock = time.monotonic
        self._shown_mark: str | None = None
        self._shown_at = -math.inf
        self._seen: str | None = None  # the newest mark a poll saw, and since when
        self._seen_at = -math.inf
        self._spent = 0.0  # CPU seconds the pages took since the mark shown moved
        self._last_hold = self.reread_every_s  # the hold when it last moved
        self._lock = threading.Lock()

    def spent(self, seconds: float) -> None:
        """Count CPU time the pages took (a read of the record, a render)."""
        with self._lock:
            self._spent += seconds

    def hold(self) -> float:
        """How long a shown mark is kept while the record keeps changing: :attr:`reread_every_s`,
        longer when what the pages took since it moved is more than :attr:`refresh_share` of that."""
        if not self.refresh_share:
            return self.reread_every_s
        return max(self.reread_every_s, min(self.max_hold_s, self._spent / self.refresh_share))

    def held_s(self) -> float:
        """The longest a streaming record's mark is held now (what must not look like a pause)."""
        return max(self.hold(), self._last_hold)

    async def read_costed(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(conn, *args)`` on the read pool, its thread's CPU time counted by :meth:`spent`."""
        return await self.read(_costed, fn, self.spent, *args)

    async def mark(self) -> str:
        """A mark of the record that changes whenever anything is committed to it, so a page
        whose mark is unchanged is not read again. SQLite (one collector per file): this
        collector's count of commits, no query. PostgreSQL: one query of a snapshot, which sees
        the commits of every collector on the database. While the record keeps changing, a new
        mark is shown once per :meth:`hold`; the first change after a quiet spell (no change
        seen for :attr:`reread_every_s`) at once."""
        if self.store is not None and self.store.dialect == "sqlite":
            current = f"c{self.store.commits}"
        else:
            from edgec.collector.storage import reads

            current = await self.read_costed(reads.change_mark)
        now = self.clock()
        with self._lock:
            quiet = False
            if current != self._seen:
                quiet = self._seen == self._shown_mark and now - self._seen_at >= self.reread_every_s
                self._seen, self._seen_at = current, now
            if current != self._shown_mark and (self._shown_mark is None or quiet
                                                or now - self._shown_at >= self.hold()):
                if self._shown_mark is not None:
                    self._shown_at = now
                self._last_hold = self.hold()
                self._shown_mark, self._spent = current, 0.0
            return self._shown_mark

    def sign_in_path(self) -> str:
        """A path with a fresh one-time sign-in token (append it to the server's URL)."""
        return "/login?token=" + self.sessions.new_link_token()

    def api_router(self):
        """The admin-only API route that makes sign-in links (device credentials get the guard's 403)."""
        from fastapi import APIRouter

        router = APIRouter()

        @router.post(SIGN_IN_PATH, tags=["server"], status_code=201)
        async def sign_in_link() -> dict[str, str]:
            """A one-time link that signs a browser in to the dashboard ('edgec dashboard' prints it)."""
            return {"path": self.sign_in_path()}

        return router

    def wrap(self, api) -> Callable:
        """The ASGI application of the collector: the dashboard for its own paths, ``api`` (the
        guarded API) for every other one (an unknown path still gets the API's 401)."""
        from edgec.collector.dashboard.pages import create_pages

        pages = create_pages(self)

        async def site(scope, receive, send) -> None:
            path = scope.get("path", "")
            if scope["type"] == "http" and (path in OWN_PATHS or path.startswith(OWN_PREFIXES)):
                await self._serve(pages, scope, receive, send)
                return
            await api(scope, receive, send)

        site.dashboard = self
        return site

    async def _serve(self, pages, scope, receive, send) -> None:
        async def secured(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *HEADERS]}
            await send(message)

        received = 0

        async def capped():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_FORM:
                raise _TooLarge()
            return message

        for key, value in scope["headers"]:
            if key == b"content-length" and (not value.isdigit() or int(value) > MAX_FORM):
                await _send_text(secured, 413, "request body too large for the dashboard")
                return
        path = scope["path"]
        if not path.startswith(OPEN_PATHS):
            session = self.sessions.get(_cookie(scope))
            if session is None:
                from edgec.collector.dashboard.pages import sign_in_page

                # a page asked for by a browser is the sign-in page (200: nothing failed); a
                # fragment, chart, action or unknown path is refused
                status = 200 if scope["method"] == "GET" and path in PAGE_PATHS else 401
                await _send_html(secured, status, sign_in_page(scope))
                return
            scope = {**scope, "edgec.session": session}
        try:
            await pages(scope, capped, secured)
        except _TooLarge:
            await _send_text(secured, 413, "request body too large for the dashboard")


class _TooLarge(Exception):
    pass


def _costed(conn, fn: Callable[..., Any], spent: Callable[[float], None], *args: Any) -> Any:
    started = time.thread_time()
    try:
        return fn(conn, *args)
    finally:
        spent(time.thread_time() - started)


def _cookie(scope) -> str | None:
    for key, value in scope["headers"]:
        if key == b"cookie":
            return cookie_parser(value.decode("latin-1")).get(COOKIE)
    return None


async def _send_html(send, status: int, html: str) -> None:
    body = html.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", b"%d" % len(body)),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


async def _send_text(send, status: int, text: str) -> None:
    body = json.dumps({"detail": text}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
