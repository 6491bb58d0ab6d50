"""Sign-in links and browser sessions of the dashboard, kept in the collector's memory.

A sign-in link carries a one-time token (printed by ``edgec serve`` at start, or made for the
admin token's holder by ``edgec dashboard``); opening it trades the token for a session cookie.
Only sha256 digests of tokens and session ids are kept, so a memory dump holds nothing to sign in
with. Each session has its own CSRF token for the forms that change state. A session ends when
its browser signs out, after :data:`SESSION_IDLE` without a request (an open page's polls are
requests, while its tab is visible), and :data:`SESSION_TTL` after sign-in whatever happens.

They live in the memory of the ``edgec serve`` process that made them (it is one process): a
restart signs every browser out, and with several collectors on one PostgreSQL database a link
or session works on the collector that made it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

SIGN_IN_TTL = 24 * 3600.0  # an unused sign-in link
SESSION_TTL = 12 * 3600.0  # a browser session, from its sign-in
SESSION_IDLE = 3600.0  # a browser session without a request
MAX_ENTRIES = 1000  # sign-in links or sessions kept at most; the oldest go first
COOKIE = "edgec_session"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


@dataclass
class Session:
    csrf: str
    expires: float  # the absolute end
    used: float = 0.0  # the last request


class Sessions:
    """One-time sign-in tokens and the sessions they opened (thread-safe)."""

    def __init__(self, clock=time.monotonic, ttl: float = SESSION_TTL, idle: float = SESSION_IDLE):
        self._clock = clock
        self.ttl = ttl
        self.idle = idle
        self._links: dict[str, float] = {}
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def _trim(self, table: dict, now: float) -> None:
        expired = [k for k, v in table.items() if (self._ends(v) if isinstance(v, Session) else v) < now]
        for key in expired:
            del table[key]
        while len(table) >= MAX_ENTRIES:
            del table[next(iter(table))]

    def new_link_token(self, ttl: float = SIGN_IN_TTL) -> str:
        """A fresh one-time sign-in token."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = self._clock()
            self._trim(self._links, now)
            self._links[_digest(token)] = now + ttl
        return token

    def sign_in(self, token: str) -> tuple[str, Session] | None:
        """Trade a sign-in token for a new session (id, session); None when it is unknown, used or expired."""
        key = _digest(token)
        with self._lock:
            now = self._clock()
            expires = self._links.pop(key, None)
            if expires is None or expires < now:
                return None
            self._trim(self._sessions, now)
            sid = secrets.token_urlsafe(32)
            session = Session(csrf=secrets.token_urlsafe(24), expires=now + self.ttl, used=now)
            self._sessions[_digest(sid)] = session
        return sid, session

    def _ends(self, session: Session) -> float:
        return min(session.expires, session.used + self.idle)

    def get(self, sid: str | None) -> Session | None:
        """The live session of a cookie value, if any (a request: it keeps the session from idling out)."""
        if not sid or len(sid) > 128:
            return None
        with self._lock:
            key = _digest(sid)
            session = self._sessions.get(key)
            now = self._clock()
            if session is None:
                return None
            if self._ends(session) < now:
                del self._sessions[key]
                return None
            session.used = now
            return session

    def end(self, sid: str | None) -> None:
        with self._lock:
            self._sessions.pop(_digest(sid or ""), None)

    @staticmethod
    def csrf_ok(session: Session, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(session.csrf.encode(), (sent or "").encode("utf-8", "replace"))
