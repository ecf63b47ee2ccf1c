"""Durable storage: the metadata database and the content-addressed code store."""

from lamina.store.blobs import CodeStore, StoredCode, UnsafePackageError
from lamina.store.metadata import MetadataStore

__all__ = ["CodeStore", "MetadataStore", "StoredCode", "UnsafePackageError"]
