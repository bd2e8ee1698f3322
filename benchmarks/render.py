"""Print the Markdown tables of saved benchmark JSON files (as the scripts print them).

python -m benchmarks.render docs/bench/indexing-cpu.json docs/bench/search-cpu.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import common


def render(path: Path) -> str:
    data = json.loads(path.read_text())
    if "chosen_by_auto" in data:
        from .bench_backends import report as backends_report

        return backends_report(data)
    if "compute_sweep" in data or "backends" in data:
        from .bench_indexing import report

        return report(data)
    if "search" in data:
        from .bench_search import report as search_report

        batch = next(
            int(k[5:-7])
            for k in data["search"][0]
            if k.startswith("batch") and k.endswith("_p50_ms")
        )
        return search_report(data, batch)
    m = data["machine"]
    cols = [k for k in data["runs"][0] if k not in ("failed",)]
    return (
        f"machine: {m['cores']} cores, {m['cpu']}, load {m['loadavg_start']} -> "
        f"{m.get('loadavg_end')}\nworkload: {data['workload']}\n"
        + common.table("Peak memory while indexing (MB)", data["runs"], cols)
    )


def main(argv: list[str] | None = None) -> None:
    for name in argv if argv is not None else sys.argv[1:]:
        print(f"<!-- {name} -->")
        print(render(Path(name)))
        print()


if __name__ == "__main__":
    main()
