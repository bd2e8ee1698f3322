"""Where images of an indexing run are decoded and embedded (``vsearch index --engine``).

An engine turns the run's distinct image sources into embedded batches; the pipeline
(:mod:`indexer.pipeline`) owns everything else - the plan, the rows, the writes, the report -
so every engine keeps the same guarantees. ``local`` is the pipeline's own DataLoader path;
``ray`` (:mod:`indexer.engines.ray_engine`) runs on a Ray cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

# (source positions, content hashes, vectors in the same order, [(source position, reason)])
Embedded = tuple[list[int], list[str], Any, list[tuple[int, str]]]
Engine = Callable[[Sequence[str]], Iterator[Embedded]]
