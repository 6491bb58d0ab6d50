"""The collector's record: devices, credentials, jobs and their leases, artifacts and results in
one database (SQLite by default, PostgreSQL for fleets that outgrow one host), uploaded files in
a content-addressed directory. One module per role:

- :mod:`.store`: the :class:`~.store.Store` interface (opening, checking and migrating the
  database, pooled reads, the one transaction helper), with :mod:`.sqlite_store` (one writer,
  group commits) and :mod:`.postgres_store` (several writers and collectors, reconnects) as its
  implementations; ``Store(db)`` makes the one ``db`` names;
- :mod:`.writer`: the writer threads that commit before a request is answered;
- :mod:`.listen`: PostgreSQL notifications from the other collectors on the database;
- :mod:`.pool`: the read connections;
- :mod:`.connections`: SQLite's and PostgreSQL's connections, taking the same SQL;
- :mod:`.schema`: the tables, and the migration of an older record;
- :mod:`.errors`: a refused request, a failed database;
- :mod:`.blobs`: uploaded files by sha256, and their rows;
- :mod:`.jobs`: the writers' operations on devices, jobs and leases;
- :mod:`.results`: a posted result, stored once and only from the current lease holder;
- :mod:`.credentials`: device credentials and enrollment tokens;
- :mod:`.reads`: jobs, devices and results as the API shows them, the health probe, report rows.

The record's operations are functions ``fn(conn, *args)`` that the store runs
(``store.write(storage.jobs.lease, ...)``, ``store.read(storage.reads.job_doc, ...)``).
"""

# the implementations register themselves with Store when imported
from edgec.collector.storage import (
    blobs,
    connections,
    credentials,
    errors,
    jobs,
    postgres_store,
    reads,
    results,
    schema,
    sqlite_store,
    store,
)

__all__ = ["blobs", "connections", "credentials", "errors", "jobs", "postgres_store", "reads", "results", "schema",
           "sqlite_store", "store"]
