"""The collector's HTTP API as the agent calls it (urllib, a bearer token on every request), and
the backoff between tries when the collector is away.

Standard library only, Python 3.6 syntax, like the rest of the agent.
"""

import hashlib
import http.client as http_client
import json
import random
import socket
import urllib.error as urllib_error
import urllib.request as urllib_request

from . import __version__
from .errors import AgentError
from .vocab import API

CHUNK = 1 << 16


class Unreachable(Exception):
    """The collector did not answer (refused, reset, timed out, 5xx): try again later."""


class AgentRefused(AgentError):
    """The collector refused the agent itself (token, schema version, another agent's name)."""


class Answer:
    def __init__(self, status, data):
        self.status = status
        self.data = data

    def json(self):
        try:
            return json.loads(self.data.decode("utf-8")) if self.data else None
        except ValueError:
            return None

    def detail(self):
        doc = self.json()
        if isinstance(doc, dict) and "detail" in doc:
            detail = doc["detail"]
            if isinstance(detail, list):
                return "; ".join("%s: %s" % (".".join(str(x) for x in d.get("loc", [])), d.get("msg"))
                                 for d in detail[:5] if isinstance(d, dict))
            return str(detail)
        return (self.data or b"").decode("utf-8", "replace")[:300]


class Api:
    """The collector's HTTP API with urllib (bearer token on every request)."""

    def __init__(self, url, token, timeout=30.0, cafile=None):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.context = None
        if cafile:
            import ssl

            self.context = ssl.create_default_context(cafile=cafile)

    def _open(self, method, path, body=None, timeout=None, accept="application/json"):
        headers = {"Authorization": "Bearer " + self.token, "Accept": accept,
                   "User-Agent": "edgec-agent/%s" % __version__}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode("utf-8")
            headers["Content-Type"] = "application/json"
        request = urllib_request.Request(self.url + API + path, data=data, headers=headers, method=method)
        try:
            return urllib_request.urlopen(request, timeout=timeout or self.timeout, context=self.context)
        except urllib_error.HTTPError as exc:
            return exc
        except (urllib_error.URLError, socket.timeout, http_client.HTTPException, OSError) as exc:
            raise Unreachable("%s %s: %s" % (method, path, getattr(exc, "reason", None) or exc)) from exc

    def call(self, method, path, body=None, timeout=None):
        """One request -> :class:`Answer`; 401 raises :class:`AgentRefused`, 5xx/no answer :class:`Unreachable`."""
        response = self._open(method, path, body, timeout)
        try:
            status = response.getcode()
            data = response.read()
        except (socket.timeout, http_client.HTTPException, OSError) as exc:
            raise Unreachable("%s %s: reading the answer failed: %s" % (method, path, exc)) from exc
        finally:
            response.close()
        answer = Answer(status, data)
        if status == 401:
            raise AgentRefused("the collector at %s refused the token (401): %s" % (self.url, answer.detail()))
        if status >= 500:
            raise Unreachable("%s %s: %d %s" % (method, path, status, answer.detail()))
        return answer

    def download(self, sha256, dest, timeout=None):
        """Stream a file by sha256 into ``dest``; returns the sha256 of the bytes received."""
        response = self._open("GET", "/blobs/" + sha256, timeout=timeout, accept="application/octet-stream")
        digest = hashlib.sha256()
        try:
            status = response.getcode()
            if status == 401:
                raise AgentRefused("the collector at %s refused the token (401)" % self.url)
            if status != 200:
                answer = Answer(status, response.read())
                if status >= 500:
                    raise Unreachable("download of %s: %d %s" % (sha256, status, answer.detail()))
                raise AgentError("the collector has no file %s (%d %s)" % (sha256, status, answer.detail()))
            with open(dest, "wb") as fh:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    digest.update(chunk)
                    fh.write(chunk)
        except (socket.timeout, http_client.HTTPException, OSError) as exc:
            raise Unreachable("download of %s failed: %s" % (sha256, exc)) from exc
        finally:
            response.close()
        return digest.hexdigest()


class Backoff:
    """Exponential backoff with full jitter: 0.5 s doubling up to ``cap``."""

    def __init__(self, base=0.5, cap=30.0):
        self.base = base
        self.cap = cap
        self.failures = 0

    def next(self):
        delay = min(self.cap, self.base * (2 ** self.failures))
        self.failures += 1
        return random.uniform(delay / 2.0, delay)

    def reset(self):
        self.failures = 0
