"""A job's files on the device: each downloaded from the collector by its sha256 and checked.

A file whose bytes do not hash to the sha256 the job names is fetched once more and then refused,
never run: the collector's copy is corrupt or the transfer was altered. A download the network
interrupts is retried with backoff until the job is given up (the agent stops, or the collector
takes the lease back).

Standard library only, Python 3.6 syntax, like the rest of the agent.
"""

import logging
import os
import re
import time

from .api import Backoff, Unreachable
from .errors import AgentError
from .vocab import FILE_PATTERN, SHA256_PATTERN

log = logging.getLogger(__name__)

FILE = re.compile(FILE_PATTERN)
SHA256 = re.compile(SHA256_PATTERN)


class JobFailed(Exception):
    """A job that cannot be run or measured; ``retry``: whether another attempt may succeed."""

    def __init__(self, message, retry):
        super().__init__(message)
        self.retry = retry


def fetch_job(api, job, job_dir, given_up):
    """Download and verify the job's files into ``job_dir``; the path the benchmark runs.

    Args:
        api: :class:`~.api.Api` of the collector.
        job: the leased job (``files``: name -> sha256, ``target``: the file to run or ``bundle``).
        job_dir: where the files go (names may hold ``/``).
        given_up: returns True once the job is given up (an interrupted download then fails).

    Raises:
        JobFailed: a file name or sha256 the agent does not accept, bytes that do not match, a
            target that is not among the files, a download that failed.
    """
    files = job.get("files") or {}
    for name, sha in sorted(files.items()):
        if not FILE.match(name) or not SHA256.match(sha or ""):
            raise JobFailed("the job names a file '%s' (sha256 %r) this agent does not accept" % (name, sha),
                            retry=False)
        dest = os.path.join(job_dir, *name.split("/"))
        if not os.path.isdir(os.path.dirname(dest)):
            os.makedirs(os.path.dirname(dest))
        for attempt in (1, 2):
            got = download(api, sha, dest, given_up)
            if got == sha:
                break
            log.warning("%s: received sha256 %s, expected %s (try %d of 2)", name, got, sha, attempt)
        else:
            os.remove(dest)
            raise JobFailed("refused to run %s: the downloaded bytes have sha256 %s, expected %s (the "
                            "collector's copy is corrupt or the transfer was altered)" % (name, got, sha),
                            retry=False)
    target = job.get("target")
    if target == "bundle":
        return os.path.join(job_dir, "bundle")
    if target not in files:
        raise JobFailed("the job's target %r is not among its files" % target, retry=False)
    return os.path.join(job_dir, target)


def download(api, sha, dest, given_up):
    """One file into ``dest``, retried with backoff while the collector is unreachable; the
    sha256 of the bytes received."""
    backoff = Backoff()
    while True:
        try:
            return api.download(sha, dest, timeout=max(60.0, api.timeout))
        except Unreachable as exc:
            if given_up():
                raise JobFailed("download of %s interrupted: %s" % (sha[:12], exc), retry=True) from exc
            delay = backoff.next()
            log.warning("%s; retrying in %.1f s", exc, delay)
            time.sleep(delay)
        except AgentError as exc:
            raise JobFailed(str(exc), retry=True) from exc
