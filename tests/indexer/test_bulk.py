"""``--write bulk`` without pymilvus's bulk writer installed: one clear message naming the extra."""

from __future__ import annotations

import sys

import pytest

from indexer.bulk import BulkSink
from search.errors import ConfigError


def test_missing_bulk_writer_names_the_extra(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "pymilvus.bulk_writer", None)  # import fails
    with pytest.raises(ConfigError, match=r"pip install 'vsearch\[bulk\]'"):
        BulkSink(store=None, physical="c", bulk_dir=str(tmp_path))  # type: ignore[arg-type]
