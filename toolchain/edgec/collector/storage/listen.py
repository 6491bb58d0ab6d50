"""PostgreSQL notifications: another collector on the database changed jobs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from edgec.collector.storage.connections import NOTIFY_CHANNEL, one_line

log = logging.getLogger(__name__)


def listen(connect: Callable[[], Any], errors: tuple[type[BaseException], ...], callback: Callable[[str], None],
           stop: threading.Event) -> threading.Thread:
    """Call ``callback(payload)`` from a thread for every notice on the jobs' channel until ``stop``
    is set; a lost connection is made again (after a second)."""

    def loop() -> None:
        while not stop.is_set():
            try:
                conn = connect()
                conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                while not stop.is_set():
                    for notice in conn.raw.notifies(timeout=0.5):
                        callback(notice.payload)
            except errors as exc:
                log.warning("listening for job changes: %s; retrying", one_line(exc))
                stop.wait(1.0)
                continue
            conn.close()

    thread = threading.Thread(target=loop, name="collector-listen", daemon=True)
    thread.start()
    return thread
