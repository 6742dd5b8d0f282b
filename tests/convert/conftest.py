"""A `gs://` store kept in memory (fsspec), so epath code paths run without a network."""

import importlib

import pytest
from fsspec.implementations.memory import MemoryFileSystem


class _GcsInMemory(MemoryFileSystem):
    protocol = ("gcs", "gs")
    root_marker = ""
    store: dict = {}  # its own store, not the memory:// one
    pseudo_dirs = [""]


@pytest.fixture
def gcs_in_memory(monkeypatch):
    """etils.epath reaches gs:// through fsspec's "gcs" filesystem: serve it from memory."""
    from etils.epath import backend, gpath

    registry = importlib.import_module("fsspec.registry")
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
    monkeypatch.setitem(registry._registry, "gcs", _GcsInMemory)
    backend.fsspec_backend._get_filesystem.cache_clear()
    _GcsInMemory.clear_instance_cache()
    yield
    _GcsInMemory.store.clear()
    _GcsInMemory.pseudo_dirs[:] = [""]
    backend.fsspec_backend._get_filesystem.cache_clear()
