"""The collector's application: the FastAPI routes of the API, one router per resource, the lease
reaper, and the :class:`~edgec.collector.guard.Guard` around them.

- :mod:`.app`: :func:`create_app` (the application, its error answers, its lifespan);
- :mod:`.shared`: the :class:`~.shared.Collector` every route shares (the record, the settings,
  the long polls' wake-ups), the path parameters and documented errors;
- :mod:`.health`, :mod:`.blobs` (artifacts), :mod:`.jobs`, :mod:`.devices` (registration,
  enrollment, revocation), :mod:`.leases` (the agents' lease polls and heartbeats),
  :mod:`.results` (results and report rows);
- :mod:`.reaper`: re-queues the jobs whose lease expired.

JSON bodies are parsed strictly (:mod:`edgec.collector.bodies`) and validated by pydantic models
(:mod:`edgec.collector.messages`), agent reports by the one report validator; whatever is refused
gets a 422 that can always be encoded. Changes are committed by the store's writer before the
answer is sent. Agents long-poll for jobs; a reaper re-queues the jobs whose lease expired.
"""

from edgec.collector.routes.app import create_app

__all__ = ["create_app"]
