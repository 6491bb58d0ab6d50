"""The agent's report spool: nothing measured is lost on the agent's side.

A report is written to the spool directory (fsync, then an atomic rename) before it is posted, and
removed only once the collector has answered, so a report that could not be delivered is sent
again after a restart. Each entry carries an id generated once per job attempt (``uid``), so a
report posted twice is stored once. An entry that cannot be read is moved aside (``.bad``).

Standard library only, Python 3.6 syntax, like the rest of the agent.
"""

import json
import logging
import os

from .api import Backoff, Unreachable

log = logging.getLogger(__name__)


class Spool:
    """The spooled reports in ``directory``, posted to the collector through ``api``.

    Args:
        directory: the spool directory (created when missing).
        api: :class:`~.api.Api` of the collector.
        stopping: returns True once the agent is stopping (delivery then stops, the entry stays).
        sleep: waits between delivery attempts (the daemon's, which a signal interrupts).
    """

    def __init__(self, directory, api, stopping, sleep):
        self.directory = directory
        self.api = api
        self.stopping = stopping
        self.sleep = sleep

    def create(self):
        if not os.path.isdir(self.directory):
            os.makedirs(self.directory)

    def write(self, entry):
        """Keep ``entry`` (with its ``uid``) on disk; its path."""
        path = os.path.join(self.directory, entry["uid"] + ".json")
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(entry, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, path)
        return path

    def deliver(self, path, entry):
        """Post a spooled report until the collector answers (then the entry goes).

        Returns:
            True once delivered (or refused by the collector, which is logged); False when the
            agent is stopping and the entry stays for the next start.
        """
        backoff = Backoff()
        while True:
            try:
                answer = self.api.call("POST", "/results", entry)
            except Unreachable as exc:
                if self.stopping():
                    log.warning("result of job %d kept in %s: it is sent on the next start", entry["job_id"], path)
                    return False
                delay = backoff.next()
                log.warning("posting the result of job %d failed (%s); retrying in %.1f s", entry["job_id"], exc,
                            delay)
                self.sleep(delay)
                continue
            if answer.status in (200, 201):
                doc = answer.json() or {}
                log.info("job %d: result %s stored%s", entry["job_id"], doc.get("result_id"),
                         " (it was already there)" if doc.get("duplicate") else "")
            else:
                log.error("job %d: the collector did not store the result (%d): %s", entry["job_id"], answer.status,
                          answer.detail())
            os.remove(path)
            return True

    def flush(self):
        """Deliver every spooled report, oldest name first; False when the agent stopped meanwhile."""
        for name in sorted(os.listdir(self.directory)):
            if not name.endswith(".json"):
                continue
            path = os.path.join(self.directory, name)
            try:
                with open(path) as fh:
                    entry = json.load(fh)
            except (OSError, ValueError) as exc:
                log.error("unreadable spooled result %s (%s); moved aside", path, exc)
                os.rename(path, path + ".bad")
                continue
            log.info("sending the spooled result of job %s", entry.get("job_id"))
            if not self.deliver(path, entry):
                return False
        return True
