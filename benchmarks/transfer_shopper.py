"""Does transfer learning help shoppers? The "find this product" flow, run as a new user would.

On a catalog from ``benchmarks.shopper_catalog`` (one photo per product, one held-out
shopper photo per product in ``queries.csv``), through the real CLI, each step its own
process, in a temporary Milvus Lite database and model cache:

1. ``vsearch index catalog.csv`` (base model), then every query through ``Searcher``
   (top 10): "find this product" R@1/R@5/R@10 and category top-1, 95 % bootstrap intervals;
2. ``vsearch finetune catalog.csv -o MODEL`` with its DEFAULT options (plus
   ``--finetune-args``): exit code, wall time, printed verdict;
3. ``vsearch index catalog.csv --model local-dir:MODEL --new-version``;
   ``vsearch promote <new collection>``: accepted or refused;
4. the same queries on the new collection (through the alias when promoted, else by its
   physical name), and a paired comparison per query (exact two-sided sign test on R@1).

``--bad`` fine-tunes with a deliberately bad setting (learning rate 100x the default, or
``--bad shuffle``: a copied catalog with shuffled categories) and checks that the verdict is
"not improved" and that promote refuses it. ``--base-only`` stops after step 1.

    .venv/bin/python -m benchmarks.transfer_shopper --catalog /work/shopper \\
        --out bench-results/transfer-shopper.json

A failing step is recorded (exit code, output tail) and the report still comes out.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, machine, table, write_json

log = logging.getLogger("transfer_shopper")
TOP_K = 10
TAIL = 3000


# -- statistics ---------------------------------------------------------------------------
def ranks_of(results: Sequence[Sequence[str]], truth: Sequence[str]) -> np.ndarray:
    """1-based rank of each query's true id in its result list; 0 where it is missing."""
    out = np.zeros(len(truth), dtype=int)
    for q, (ids, true_id) in enumerate(zip(results, truth, strict=True)):
        if true_id in ids:
            out[q] = list(ids).index(true_id) + 1
    return out


def recall_hits(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per query: is the true item within the top ``k``?"""
    return (ranks >= 1) & (ranks <= k)


def bootstrap_ci(
    hits: np.ndarray, *, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``hits`` (resampling queries)."""
    values = np.asarray(hits, dtype=float)
    if values.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def sign_test(base: np.ndarray, new: np.ndarray) -> dict[str, float]:
    """Exact two-sided sign test (McNemar) on paired per-query hits.

    ``fixed``: base wrong, new right; ``broken``: the reverse; ties are dropped.
    """
    base, new = np.asarray(base, bool), np.asarray(new, bool)
    fixed, broken = int((~base & new).sum()), int((base & ~new).sum())
    n, k = fixed + broken, min(fixed, broken)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return {"queries": int(base.size), "fixed": fixed, "broken": broken, "p": p}


def metrics(
    results: Sequence[Sequence[str]],
    truth: Sequence[str],
    truth_category: Sequence[str],
    category_of: dict[str, str],
    seed: int = 0,
) -> dict[str, Any]:
    """R@1/5/10 and category top-1, each with a 95 % bootstrap interval, plus per-query hits."""
    ranks = ranks_of(results, truth)
    per_query = {f"r@{k}": recall_hits(ranks, k) for k in (1, 5, 10)}
    per_query["category@1"] = np.array(
        [
            bool(ids) and category_of.get(ids[0]) == c
            for ids, c in zip(results, truth_category, strict=True)
        ]
    )
    out: dict[str, Any] = {"queries": len(truth)}
    for name, hits in per_query.items():
        lo, hi = bootstrap_ci(hits, seed=seed)
        out[name] = {"value": float(np.mean(hits)) if len(hits) else math.nan, "ci95": [lo, hi]}
    out["per_query"] = {name: hits.astype(int).tolist() for name, hits in per_query.items()}
    out["ranks"] = ranks.tolist()
    return out


# -- running the CLI ---------------------------------------------------------------------
def vsearch_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("vsearch")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "cli.main"]


def run_step(name: str, args: Sequence[str], env: dict[str, str], timeout: float) -> dict:
    """Run one command; record its exit code, wall time and the tails of its output."""
    log.info("$ %s", shlex.join(args))
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            list(args), env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = 124, _text(exc.stdout), _text(exc.stderr) + "\n[timed out]"
    seconds = time.perf_counter() - start
    log.info("%s: exit %d in %.1f s", name, rc, seconds)
    if rc != 0:
        log.info("%s stderr tail:\n%s", name, err[-800:])
    return {"step": name, "cmd": shlex.join(args), "rc": rc, "seconds": round(seconds, 2),
            "stdout": out, "stderr_tail": err[-TAIL:]}  # fmt: skip


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def last_json(text: str) -> Any:
    """The last top-level JSON value printed in ``text`` (a --json report), or None."""
    for start in [m.start() for m in re.finditer(r"^[\[{]", text, re.M)][::-1]:
        try:
            return json.loads(text[start:])
        except json.JSONDecodeError:
            continue
    return None


def verdict_of(step: dict, report: Any) -> str:
    """ "improved", "not improved" or "failed (exit N)" from a finetune run."""
    if isinstance(report, dict):
        for key in ("verdict", "decision"):
            if isinstance(report.get(key), str):
                return report[key]
        if isinstance(report.get("improved"), bool):
            return "improved" if report["improved"] else "not improved"
    if step["rc"] == 0:
        return "improved"
    text = step["stderr_tail"].lower()
    if step["rc"] == 1 and ("not better" in text or "not improved" in text):
        return "not improved"
    return f"failed (exit {step['rc']})"


def help_text(env: dict[str, str], *sub: str) -> str:
    proc = subprocess.run([*vsearch_cmd(), *sub, "--help"], env=env, capture_output=True,
                          text=True, check=False)  # fmt: skip
    return proc.stdout


def default_lr(finetune_help: str) -> float | None:
    """The --lr default, from the help text, else from the library's options."""
    m = re.search(r"--lr LR[^\n]*\n?[^-]*?default[:= ]+([0-9.eE+-]+)", finetune_help)
    if m:
        return float(m.group(1))
    try:  # 0 in the options means "the objective's default": resolve it as finetune does
        from training.finetune import FinetuneOptions

        return float(FinetuneOptions().resolved("instance").lr)
    except Exception:  # the trainer is being changed: fall back to None
        return None


# -- searching (a child process: one process per Lite database) ----------------------------
def search_worker(queries: Path, out: Path) -> int:
    """Run in a child: every query photo through ``Searcher.similar`` (top 10)."""
    from search.config import Settings
    from search.searcher import Searcher

    searcher = Searcher(Settings.from_env())
    info = searcher.info()
    rows = read_csv(queries)
    results, start = [], time.perf_counter()
    for row in rows:
        hits = searcher.similar(str(queries.parent / row["query_image"]), limit=TOP_K)
        results.append([h.id for h in hits])
    seconds = time.perf_counter() - start
    out.write_text(json.dumps({"collection": info.name, "model": info.model.describe()
                               if info.model else None, "seconds": seconds,
                               "results": results}))  # fmt: skip
    return 0


def search_all(queries: Path, env: dict[str, str], work: Path, tag: str, timeout: float) -> dict:
    out = work / f"search-{tag}.json"
    step = run_step(f"search-{tag}", [sys.executable, "-m", "benchmarks.transfer_shopper",
                                      "--search-worker", str(queries), str(out)], env, timeout)  # fmt: skip
    step["output"] = json.loads(out.read_text()) if out.is_file() else None
    return step


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# -- the flow ------------------------------------------------------------------------------
def user_env(work: Path) -> dict[str, str]:
    """A new user's environment: a fresh Lite database and model cache, offline, defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSEARCH_")}
    env.update(
        VSEARCH_URI=str(work / "vsearch.db"),
        VSEARCH_CACHE_DIR=str(work / "cache"),
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    return env


def shuffled_catalog(catalog_dir: Path, target: Path, seed: int) -> Path:
    """A copy of the catalog (images too) whose categories are shuffled across items."""
    rows = read_csv(catalog_dir / "catalog.csv")
    cats = [r["category"] for r in rows]
    np.random.default_rng(seed).shuffle(cats)
    shutil.copytree(catalog_dir / "images", target / "images", dirs_exist_ok=True)
    with (target / "catalog.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "category": c} for r, c in zip(rows, cats, strict=True))
    return target / "catalog.csv"


class Flow:
    """The steps of one run, sharing the catalog, the environment and the report."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.catalog = args.catalog / "catalog.csv"
        self.queries = args.catalog / "queries.csv"
        self.category_of = {r["id"]: r["category"] for r in read_csv(self.catalog)}
        qrows = read_csv(self.queries)
        self.truth = [r["id"] for r in qrows]
        self.truth_category = [r["category"] for r in qrows]
        self.env = user_env(work)
        self.vs = vsearch_cmd()
        self.report: dict[str, Any] = {"steps": [], "models": {}}

    def step(self, name: str, *args: str, timeout: float | None = None, **env: str) -> dict:
        step = run_step(name, [*self.vs, *args], {**self.env, **env},
                        timeout or self.args.step_timeout)  # fmt: skip
        step["json"] = last_json(step.pop("stdout"))
        self.report["steps"].append(step)
        return step

    def measure(self, tag: str, collection: str, crops: str = "") -> dict[str, Any] | None:
        """Every query through ``Searcher``; ``crops`` overrides the query crops (default: the
        searcher's own default, as a new user gets it)."""
        env = {**self.env, "VSEARCH_COLLECTION": collection}
        if crops:
            env["VSEARCH_QUERY_CROPS"] = crops
        step = search_all(self.queries, env, self.work, tag, self.args.step_timeout)
        out = step.pop("output")
        step.pop("stdout")
        self.report["steps"].append(step)
        if step["rc"] != 0 or out is None:
            return None
        m = metrics(out["results"], self.truth, self.truth_category, self.category_of,
                    self.args.seed)  # fmt: skip
        m.update(collection=out["collection"], model=out["model"], searched_as=collection,
                 query_crops=crops or "default", search_seconds=round(out["seconds"], 2))  # fmt: skip
        self.report["models"][tag] = m
        return m

    def base(self) -> bool:
        idx = self.step("index-base", "index", str(self.catalog), "--json")
        self.report["index_base"] = idx["json"]
        ok = idx["rc"] in (0, 1) and self.measure("base", "catalog") is not None
        if ok and self.args.whole:
            self.measure("base-whole", "catalog", crops="none")
        return ok

    def finetune(self) -> Path | None:
        fhelp = help_text(self.env, "finetune")
        model = self.work / "model"
        source = self.catalog
        extra = shlex.split(self.args.finetune_args)
        bad: dict[str, Any] = {}
        if self.args.bad == "lr":
            lr = default_lr(fhelp)
            bad = {"kind": "lr x100", "default_lr": lr}
            if lr is not None:
                extra += ["--lr", repr(lr * 100)]
        elif self.args.bad == "shuffle":
            source = shuffled_catalog(self.args.catalog, self.work / "shuffled", self.args.seed)
            bad = {"kind": "shuffled categories", "catalog": str(source)}
        json_flag = ["--json"] if "--json" in fhelp else []
        ft = self.step("finetune", "finetune", str(source), "-o", str(model), *json_flag,
                       *extra, timeout=self.args.finetune_timeout)  # fmt: skip
        self.report["finetune"] = {
            "rc": ft["rc"], "seconds": ft["seconds"], "verdict": verdict_of(ft, ft["json"]),
            "args": extra, "bad": bad or None, "report": ft["json"],
        }  # fmt: skip
        return model if ft["rc"] in (0, 1) and model.is_dir() else None

    def adapted(self, model: Path) -> None:
        idx = self.step("index-adapted", "index", str(self.catalog), "--model",
                        f"local-dir:{model}", "--new-version", "--json")  # fmt: skip
        self.report["index_adapted"] = idx["json"]
        name = (idx["json"] or {}).get("collection") if isinstance(idx["json"], dict) else None
        if idx["rc"] not in (0, 1) or not name:
            return
        pr = self.step("promote", "promote", name)
        accepted = pr["rc"] == 0
        self.report["promote"] = {"collection": name, "rc": pr["rc"], "accepted": accepted,
                                  "message": pr["stderr_tail"][-500:]}  # fmt: skip
        if self.measure("adapted", "catalog" if accepted else name) is None:
            return
        if self.args.whole:
            self.measure("adapted-whole", "catalog" if accepted else name, crops="none")
        base, new = self.report["models"]["base"], self.report["models"]["adapted"]
        self.report["paired"] = {
            k: sign_test(np.array(base["per_query"][k]), np.array(new["per_query"][k]))
            for k in ("r@1", "r@10", "category@1")
        }


def summary_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for tag, m in report["models"].items():
        row = {"model": tag, "queries": m["queries"]}
        for k in ("r@1", "r@5", "r@10", "category@1"):
            lo, hi = m[k]["ci95"]
            row[k] = f"{m[k]['value']:.3f} [{lo:.2f}-{hi:.2f}]"
        rows.append(row)
    return rows


def print_report(report: dict[str, Any]) -> None:
    print(table("find this product (95 % bootstrap intervals)", summary_rows(report),
                ["model", "queries", "r@1", "r@5", "r@10", "category@1"]))  # fmt: skip
    ft = report.get("finetune")
    if ft:
        print(f"\nfinetune: exit {ft['rc']}, {ft['seconds']:.0f} s, verdict: {ft['verdict']}")
    if report.get("promote"):
        pr = report["promote"]
        print(f"promote {pr['collection']}: {'accepted' if pr['accepted'] else 'REFUSED'} "
              f"(exit {pr['rc']})")  # fmt: skip
    for k, t in (report.get("paired") or {}).items():
        print(f"paired {k}: fixed {t['fixed']}, broken {t['broken']} of {t['queries']}, "
              f"p = {t['p']:.2g}")  # fmt: skip
    if report.get("bad_check"):
        print(f"bad-setting check: {report['bad_check']}")
    failed = [s for s in report["steps"] if s["rc"] not in (0,)]
    for s in failed:
        print(f"step {s['step']} exit {s['rc']}: {s['stderr_tail'][-300:].strip()}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    work = args.work or Path(tempfile.mkdtemp(prefix="shopper-"))
    work.mkdir(parents=True, exist_ok=True)
    flow = Flow(args, work)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    flow.report.update(benchmark="transfer_shopper", machine=machine(device),
                       catalog=str(args.catalog), mode="bad" if args.bad else
                       ("base-only" if args.base_only else "full"), work=str(work))  # fmt: skip
    sources = args.catalog / "sources.json"
    if sources.is_file():
        src = json.loads(sources.read_text())
        flow.report["catalog_sources"] = {k: src.get(k) for k in
                                          ("items", "categories", "seed", "strength", "sources")}  # fmt: skip
    try:
        if flow.base() and not args.base_only:
            model = flow.finetune()
            if model is not None:
                flow.adapted(model)
    finally:
        if args.bad:
            ft, pr = flow.report.get("finetune") or {}, flow.report.get("promote") or {}
            flow.report["bad_check"] = {
                "verdict_not_improved": "not improved" in str(ft.get("verdict")).lower()
                or (isinstance(ft.get("report"), dict) and ft["report"].get("improved") is False),
                "promote_refused": bool(pr) and not pr.get("accepted"),
            }
            flow.report["bad_check"]["passed"] = all(flow.report["bad_check"].values())
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return flow.report


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 4 and sys.argv[1] == "--search-worker":
        return search_worker(Path(sys.argv[2]), Path(sys.argv[3]))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--catalog", type=Path, required=True, help="folder from shopper_catalog")
    p.add_argument("--out", type=Path, help="JSON report (default bench-results/...)")
    p.add_argument("--finetune-args", default="", help="extra `vsearch finetune` flags")
    p.add_argument("--base-only", action="store_true", help="index + search the base only")
    p.add_argument("--bad", nargs="?", const="lr", choices=["lr", "shuffle"],
                   help="fine-tune with a bad setting (lr x100, or shuffled categories)")  # fmt: skip
    p.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the temporary working folder")
    p.add_argument("--whole", action="store_true",
                   help="also search with the whole photo only (VSEARCH_QUERY_CROPS=none)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="bootstrap / shuffle seed")
    p.add_argument("--step-timeout", type=float, default=1800)
    p.add_argument("--finetune-timeout", type=float, default=3600)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    name = "transfer-shopper-bad.json" if args.bad else "transfer-shopper.json"
    out = args.out or RESULTS / name
    report = run(args)
    print_report(report)
    print(f"\nwrote {write_json(out, report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
