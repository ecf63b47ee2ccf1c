"""Durable storage: the metadata database (SQLite or PostgreSQL: `engine`, `migrations`,
`open`), the content-addressed code store and the queue of asynchronous events."""

from lamina.store.blobs import CodeStore, StoredCode, UnsafePackageError
from lamina.store.event_queue import EventStore, SqliteEventStore
from lamina.store.metadata import MetadataStore

__all__ = [
    "CodeStore",
    "EventStore",
    "MetadataStore",
    "SqliteEventStore",
    "StoredCode",
    "UnsafePackageError",
]
