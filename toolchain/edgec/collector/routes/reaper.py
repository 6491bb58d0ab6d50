"""The lease reaper: re-queues (or fails) the jobs whose lease expired, on the record's lease
clock, never this host's wall clock (it may step)."""

from __future__ import annotations

import asyncio
import logging

from edgec.collector import storage
from edgec.collector.routes.shared import Collector
from edgec.collector.storage.errors import StoreFailed

log = logging.getLogger(__name__)


async def reap_once(c: Collector) -> None:
    """Expire the leases that are due, log each job and wake the long polls."""
    until = await c.read(storage.jobs.next_expiry)
    if until is None or until >= 0:
        return
    changed = await c.write(storage.jobs.expire_leases)
    for job_id, state in changed:
        log.warning("job %d: lease expired, %s", job_id, "re-queued" if state == "queued" else state)
    if changed:
        c.notify()


async def reaper(c: Collector) -> None:
    """Every ``reaper_interval`` seconds, until cancelled: :func:`reap_once`."""
    while True:
        await asyncio.sleep(c.settings.reaper_interval)
        try:
            await reap_once(c)
        except StoreFailed:
            await asyncio.sleep(5.0)  # reported by /v1/health; no log line every quarter second
        except Exception:  # noqa: BLE001 - the reaper must outlive one bad round
            log.exception("lease reaper")
