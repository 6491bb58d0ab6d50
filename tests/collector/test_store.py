"""The record's store on both databases (an SQLite file, a real PostgreSQL cluster): the
implementation ``Store(db)`` picks, changes committed before they are answered, a refused change
that undoes nothing of the others, a database error reported as a failure of the store (and the
store going on), reads that give their connection back, and PostgreSQL connections made again
after the server dropped them."""

from __future__ import annotations

import concurrent.futures

import pytest

from edgec.collector import storage
from edgec.collector.storage.errors import RecordRefused, StoreFailed
from edgec.collector.storage.store import Store

SHA = "{:064x}".format


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    db = request.getfixturevalue("postgres_url") if request.param == "postgresql" else tmp_path / "c.db"
    with Store(db, pool_size=2) as opened:
        yield opened


def refuse(conn, sha256: str) -> None:
    """Record a blob, then refuse the request: nothing of it may stay."""
    storage.blobs.add_blob(conn, sha256, 1)
    raise RecordRefused(409, f"{sha256[-4:]} refused")


def broken_sql(conn) -> None:
    conn.execute("SELECT no_such_column FROM blobs")


def test_store_picks_the_implementation_of_its_database(store):
    kind = type(store).__name__
    assert kind == {"sqlite": "SqliteStore", "postgresql": "PostgresStore"}[store.dialect]
    assert isinstance(store, Store)
    assert store.read(storage.reads.probe) is not None


def test_a_refused_change_undoes_nothing_of_the_changes_committed_with_it(store):
    before = store.commits
    pool = concurrent.futures.ThreadPoolExecutor(8)
    futures = [pool.submit(store.write, refuse if i % 7 == 3 else storage.blobs.add_blob, SHA(i),
                           *(() if i % 7 == 3 else (i,))) for i in range(60)]
    pool.shutdown()
    for i, future in enumerate(futures):
        if i % 7 == 3:
            with pytest.raises(RecordRefused, match=f"{SHA(i)[-4:]} refused"):
                future.result()
            assert store.read(storage.blobs.blob_size, SHA(i)) is None  # rolled back
        else:
            assert future.result() is True
            assert store.read(storage.blobs.blob_size, SHA(i)) == i
    assert store.commits > before  # what the dashboard's change mark counts
    assert store.last_error is None


def test_a_database_error_fails_the_request_and_the_store_goes_on(store):
    with pytest.raises(StoreFailed, match="see /v1/health"):
        store.write(broken_sql)
    assert "no_such_column" in store.last_error
    with pytest.raises(StoreFailed):
        store.read(broken_sql)
    assert store.pool.stats()["in_use"] == 0  # the read's connection came back (and was closed)
    assert store.write(storage.blobs.add_blob, SHA(1), 5) is True
    assert store.read(storage.blobs.blob_size, SHA(1)) == 5


def test_the_transaction_helper_commits_or_rolls_back(store):
    conn = store.connect()
    try:
        with store.transaction(conn):
            storage.blobs.add_blob(conn, SHA(7), 7)
        with pytest.raises(RecordRefused), store.transaction(conn):
            refuse(conn, SHA(8))
        assert not conn.in_transaction
    finally:
        conn.close()
    assert store.read(storage.blobs.blob_size, SHA(7)) == 7
    assert store.read(storage.blobs.blob_size, SHA(8)) is None


def test_closing_answers_every_queued_change(store, tmp_path):
    futures = [store.submit(storage.blobs.add_blob, SHA(i), i) for i in range(300)]
    store.close()
    assert all(future.result(timeout=0) is True for future in futures)
    with pytest.raises(RuntimeError, match="not open"):
        store.submit(storage.blobs.add_blob, SHA(0), 0)
    with Store(store.url or store.path) as again:
        assert again.read(storage.reads.probe) is not None
        assert again.read(storage.blobs.blob_size, SHA(299)) == 299


def test_postgresql_connections_dropped_by_the_server_are_made_again(postgres_url):
    import psycopg

    from edgec.collector.storage.store import application_name

    with Store(postgres_url, pool_size=2) as store:
        store.write(storage.blobs.add_blob, SHA(1), 1)
        assert store.read(storage.blobs.blob_size, SHA(1)) == 1
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE application_name = %s", (application_name(),)).fetchone()[0]
        assert killed >= 5  # four writers and the pooled reader (the session's own notices excluded)
        # every writer and the reader meet a dropped connection: each makes a new one, nothing fails
        results = [store.write(storage.blobs.add_blob, SHA(i), i) for i in range(2, 10)]
        assert results == [True] * 8
        assert store.read(storage.blobs.blob_size, SHA(9)) == 9
        assert store.last_error is None
