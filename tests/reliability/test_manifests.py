"""Bad manifests: clear per-row errors, the good rows still indexed, and no file outside the
catalog's allowed roots is ever opened (checked with a Python audit hook on ``open``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from indexer.catalog import load_catalog
from indexer.pipeline import run_index
from search.config import Settings
from search.errors import CatalogError
from search.store import MilvusStore

from . import hostile
from .checks import stored_rows

_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        _OPENED.append(os.fsdecode(args[0]))


_HOOKED: list[bool] = []


def _watch_opens() -> None:
    """Install the audit hook once (hooks cannot be removed: it is idle when not watching)."""
    if not _HOOKED:
        sys.addaudithook(_audit)
        _HOOKED.append(True)


def _errors(path: Path, **kw) -> dict[str, str]:
    cat = load_catalog(path, **kw)
    return {e.where: e.reason for e in cat.errors}


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "shop" / "img").mkdir(parents=True)
    (tmp_path / "shop" / "img" / "a.jpg").write_bytes(hostile.good_jpeg("chelsea"))
    (tmp_path / "shop" / "img" / "b.jpg").write_bytes(hostile.good_jpeg("coffee"))
    return tmp_path / "shop"


def test_missing_columns(root: Path) -> None:
    errs = _errors(_write(root / "m.csv", "sku_code,image\nA,img/a.jpg\n"))
    assert errs == {"m.csv:2": "missing column: one of id, sku, product_id"}
    errs = _errors(_write(root / "m.csv", "id,picture\nA,img/a.jpg\n"))
    assert "missing column" in errs["m.csv:2"]
    errs = _errors(_write(root / "m.csv", "id,image\nA,img/a.jpg\n"), id_column="sku")
    assert errs == {"m.csv:2": "missing column 'sku'"}


def test_duplicate_empty_and_control_character_ids(root: Path) -> None:
    text = 'id,image\nA,img/a.jpg\nA,img/b.jpg\n,img/b.jpg\n  ,img/b.jpg\n"B\x01",img/b.jpg\n'
    cat = load_catalog(_write(root / "m.csv", text))
    assert [(i.id, Path(i.image).name) for i in cat.items] == [("A", "a.jpg")]
    reasons = [e.reason for e in cat.errors]
    assert reasons[0] == "duplicate id 'A' (first row kept)"
    assert reasons[1:3] == ["empty id", "empty id"]
    assert "control characters" in reasons[3]
    long_id = "x" * 1001
    assert (
        "too long" in _errors(_write(root / "m.csv", f"id,image\n{long_id},img/a.jpg\n"))["m.csv:2"]
    )


def test_malformed_numbers(root: Path) -> None:
    text = 'id,image,price\nA,img/a.jpg,abc\nB,img/b.jpg,nan\nC,img/a.jpg,inf\nD,img/a.jpg,"1,234.50"\nE,img/b.jpg,\n'
    cat = load_catalog(_write(root / "m.csv", text))
    assert {i.id: i.metadata["price"] for i in cat.items} == {"D": 1234.5, "E": None}
    errs = {e.where: e.reason for e in cat.errors}
    assert errs["m.csv:2"] == "column 'price': 'abc' is not a number"
    assert "finite" in errs["m.csv:3"] and "finite" in errs["m.csv:4"]


def test_broken_quoting_and_ragged_rows(root: Path) -> None:
    text = 'id,image,title\nA,img/a.jpg,ok\nB,img/b.jpg,x,extra\nC,img/b.jpg,"never closed\n'
    cat = load_catalog(_write(root / "m.csv", text))
    assert [i.id for i in cat.items] == ["A"]
    reasons = [e.reason for e in cat.errors]
    assert reasons[0] == "more values than header columns"
    assert reasons[1].startswith("malformed CSV")


def test_bom_is_accepted_in_csv_and_jsonl(root: Path) -> None:
    cat = load_catalog(_write(root / "m.csv", b"\xef\xbb\xbfid,image\nA,img/a.jpg\n"))
    assert [i.id for i in cat.items] == ["A"] and not cat.errors
    row = json.dumps({"id": "B", "image": "img/b.jpg"})
    cat = load_catalog(_write(root / "m.jsonl", b"\xef\xbb\xbf" + row.encode() + b"\n"))
    assert [i.id for i in cat.items] == ["B"] and not cat.errors


def test_bad_jsonl_rows(root: Path) -> None:
    lines = [
        json.dumps({"id": 7, "image": "img/a.jpg", "price": "12"}),
        "{not json",
        json.dumps(["id", "image"]),
        json.dumps({"id": None, "image": "img/b.jpg"}),
        json.dumps({"id": "X", "image": None}),
        json.dumps({"id": "Y", "image": "img/b.jpg", "price": True}),
    ]
    cat = load_catalog(_write(root / "m.jsonl", "\n".join(lines) + "\n"))
    assert [(i.id, i.metadata) for i in cat.items] == [("7", {"price": 12.0})]
    reasons = [e.reason for e in cat.errors]
    assert reasons[0].startswith("invalid JSON")
    assert reasons[1] == "a JSONL row must be an object"
    assert reasons[2] == "empty id"
    assert reasons[3] == "empty image for id 'X'"
    assert "not a number" in reasons[4]


def test_not_utf8_manifest_is_a_clear_catalog_error(root: Path) -> None:
    with pytest.raises(CatalogError, match="not UTF-8"):
        load_catalog(
            _write(root / "m.csv", "id,image,title\nA,img/a.jpg,caf\xe9\n".encode("latin-1"))
        )


def test_paths_and_schemes_that_escape_are_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(hostile.good_jpeg("rocket"))
    os.symlink(outside / "secret.jpg", root / "img" / "link.jpg")
    os.symlink(root / "img" / "loop2.jpg", root / "img" / "loop1.jpg")
    os.symlink(root / "img" / "loop1.jpg", root / "img" / "loop2.jpg")
    rows = {
        "passwd": "../../etc/passwd",
        "abs": "/etc/passwd",
        "secret": str(outside / "secret.jpg"),
        "dotdot": "img/../../private/secret.jpg",
        "link": "img/link.jpg",
        "home": "~/x.jpg",
        "nohome": "~nosuchuser12345/x.jpg",
        "file": "file:///etc/passwd",
        "ftp": "ftp://127.0.0.1/x.jpg",
        "upper": "HTTP://127.0.0.1/x.jpg",
        "loop": "img/loop1.jpg",
        "nul": "img/a\x00.jpg",
        "ok": "img/a.jpg",
    }
    lines = [json.dumps({"id": k, "image": v}) for k, v in rows.items()]
    cat = load_catalog(_write(root / "m.jsonl", "\n".join(lines) + "\n"))
    assert [i.id for i in cat.items] in (["nohome", "ok"], ["ok"])  # nohome: a relative path
    reasons = {e.where: e.reason for e in cat.errors}
    by_id = dict(zip(rows, [f"m.jsonl:{n}" for n in range(1, len(rows) + 1)], strict=True))
    for key in ("passwd", "abs", "secret", "dotdot", "link", "home"):
        assert "outside the allowed catalog roots" in reasons[by_id[key]], key
    for key in ("file", "ftp", "upper"):
        assert "unsupported URL scheme" in reasons[by_id[key]], key
    assert "symlink loop" in reasons[by_id["loop"]]
    assert by_id["nul"] in reasons
    # an extra allowed root makes the outside folder legitimate
    cat = load_catalog(root / "m.jsonl", allowed_roots=[outside])
    assert {"secret", "link", "dotdot", "ok"} <= {i.id for i in cat.items}


def test_no_file_outside_the_catalog_is_ever_read(
    root: Path, tmp_path: Path, settings: Settings, embedder
) -> None:
    global _OPENED
    outside = tmp_path / "private"
    outside.mkdir()
    secret = outside / "secret.jpg"
    secret.write_bytes(hostile.good_jpeg("rocket"))
    os.symlink(secret, root / "img" / "link.jpg")
    rows = [
        {"id": "a", "image": "img/a.jpg", "price": "10"},
        {"id": "b", "image": "img/b.jpg", "price": "abc"},
        {"id": "abs", "image": str(secret), "price": "1"},
        {"id": "rel", "image": "../private/secret.jpg", "price": "1"},
        {"id": "link", "image": "img/link.jpg", "price": "1"},
        {"id": "file", "image": f"file://{secret}", "price": "1"},
        {"id": "a", "image": "img/b.jpg", "price": "2"},
        {"id": "", "image": "img/b.jpg", "price": "2"},
    ]
    manifest = _write(root / "m.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    _watch_opens()
    _OPENED = []
    try:
        report = run_index(manifest, settings, embedder=embedder)
    finally:
        opened, _OPENED = _OPENED, None
    assert not [p for p in opened if "private" in p], "a file outside the catalog was opened"
    assert any(p.endswith("img/a.jpg") for p in opened)  # the hook does see image reads
    assert report.count == 1 and report.added == 1
    reasons = {e.id: e.reason for e in report.row_errors}
    assert len(reasons) == 7
    rows_stored = stored_rows(MilvusStore(settings), report.collection)
    assert [r["id"] for r in rows_stored] == ["a"]
    assert rows_stored[0]["metadata"] == {"price": 10.0}


def test_bad_rows_and_truncated_manifests_never_delete(
    root: Path, settings: Settings, embedder
) -> None:
    def write(lines: list[str]) -> Path:
        return _write(root / "m.csv", "id,image,price\n" + "".join(f"{x}\n" for x in lines))

    first = run_index(
        write(["a,img/a.jpg,1", "b,img/b.jpg,2", "c,img/a.jpg,3", "d,img/b.jpg,4"]),
        settings,
        embedder=embedder,
    )
    assert first.count == 4
    # b has a bad price, c left the catalog, and a broken quote hides d: delete nothing
    cut = run_index(
        write(["a,img/a.jpg,1", "b,img/b.jpg,abc", '"d,img/b.jpg,4']), settings, embedder=embedder
    )
    assert cut.deleted == 0 and cut.count == 4
    assert any("rows after it unread" in f.reason for f in cut.row_errors)
    # read to the end: c is deleted, b (a row error) keeps its indexed item and metadata
    full = run_index(
        write(["a,img/a.jpg,1", "b,img/b.jpg,abc", "d,img/b.jpg,4"]), settings, embedder=embedder
    )
    assert full.deleted == 1 and full.count == 3
    stored = {r["id"]: r for r in stored_rows(MilvusStore(settings), full.collection)}
    assert set(stored) == {"a", "b", "d"} and stored["b"]["metadata"] == {"price": 2.0}
