import json
import os
from pathlib import Path

import pytest

from indexer.catalog import load_catalog
from search.errors import CatalogError
from tests.helpers import write_folder, write_manifest


def test_folder_ids_are_relative_paths_and_non_images_are_ignored(tmp_path: Path) -> None:
    write_folder(tmp_path / "c", ["coffee"], per_product=2)
    (tmp_path / "c" / "notes.txt").write_text("x")
    (tmp_path / "c" / "deep" / "er").mkdir(parents=True)
    (tmp_path / "c" / "deep" / "er" / "X.PNG").write_bytes(b"")
    cat = load_catalog(tmp_path / "c")
    assert [i.id for i in cat.items] == [
        "coffee/coffee-0.jpg",
        "coffee/coffee-1.jpg",
        "deep/er/X.PNG",
    ]
    assert all(Path(i.image).is_absolute() for i in cat.items) and cat.errors == []


def test_csv_manifest_keeps_metadata_and_coerces_price(tmp_path: Path) -> None:
    rows = [
        {"sku": "A1", "image": "a.jpg", "title": "Red shoe", "price": "1,299.50", "brand": "Acme"},
        {
            "sku": "A2",
            "image": "https://cdn.example.com/b.jpg",
            "title": "Blue",
            "price": "",
            "brand": "",
        },
    ]
    cat = load_catalog(write_manifest(tmp_path, rows))
    a1, a2 = cat.items
    assert a1.id == "A1" and a1.image == str(tmp_path / "a.jpg")
    assert a1.metadata == {"title": "Red shoe", "price": 1299.5, "brand": "Acme"}
    assert (
        a2.is_url and a2.image == "https://cdn.example.com/b.jpg" and a2.metadata["price"] is None
    )


def test_jsonl_manifest_with_explicit_columns(tmp_path: Path) -> None:
    rows = [{"code": 7, "pic": "x/y.jpg", "price": 5, "tags": ["a", "b"]}]
    cat = load_catalog(
        write_manifest(tmp_path, rows, "jsonl"), id_column="code", image_column="pic"
    )
    assert cat.items[0].id == "7" and cat.items[0].metadata == {"price": 5.0, "tags": ["a", "b"]}


def test_bad_rows_are_reported_not_fatal(tmp_path: Path) -> None:
    outside = tmp_path.parent / "outside.jpg"
    rows = [
        {"id": "ok", "image": "ok.jpg", "price": "3"},
        {"id": "ok", "image": "dup.jpg", "price": "3"},
        {"id": "", "image": "e.jpg", "price": "3"},
        {"id": "p", "image": "p.jpg", "price": "cheap"},
        {"id": "esc", "image": "../../etc/passwd", "price": "1"},
        {"id": "abs", "image": str(outside), "price": "1"},
        {"id": "file", "image": "file:///etc/passwd", "price": "1"},
        {"id": "noimg", "image": "", "price": "1"},
    ]
    cat = load_catalog(write_manifest(tmp_path / "m", rows))
    assert [i.id for i in cat.items] == ["ok"]
    reasons = [e.reason for e in cat.errors]
    assert len(reasons) == 7
    for needle in (
        "duplicate id",
        "empty id",
        "not a number",
        "outside the allowed",
        "unsupported URL",
        "empty image",
    ):
        assert any(needle in r for r in reasons), needle
    assert all(e.where.startswith("catalog.csv:") for e in cat.errors)


def test_allowed_roots_admit_absolute_paths(tmp_path: Path) -> None:
    images = tmp_path / "nas" / "images"
    images.mkdir(parents=True)
    rows = [{"id": "1", "image": str(images / "1.jpg")}]
    manifest = write_manifest(tmp_path / "m", rows)
    assert load_catalog(manifest).items == []
    assert load_catalog(manifest, allowed_roots=[images]).items[0].image == str(images / "1.jpg")


def test_bom_and_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffid,image\n1,a.jpg\n".encode())
    assert load_catalog(path).items[0].id == "1"
    path.write_text("name,photo\nx,a.jpg\n")
    cat = load_catalog(path)
    assert cat.items == [] and "missing column" in cat.errors[0].reason
    jl = tmp_path / "m.jsonl"
    jl.write_text('{"id": 1, "image": "a.jpg"}\n{broken\n[1,2]\n')
    cat = load_catalog(jl)
    assert len(cat.items) == 1 and len(cat.errors) == 2
    assert json.loads('{"a": 1}')  # keep json import honest


def test_unusable_sources_raise(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(CatalogError, match="folder, a .csv or a .jsonl"):
        load_catalog(tmp_path / "x.txt")


def test_the_resolver_gives_what_path_resolve_gives(tmp_path: Path) -> None:
    """Manifest paths are resolved a folder at a time (indexer.catalog._Resolver); the
    result must be Path.resolve()'s for every kind of path, symlinks and '..' included."""
    from indexer.catalog import _Resolver

    root = tmp_path / "shop"
    (root / "img" / "a").mkdir(parents=True)
    (root / "img" / "a" / "x.jpg").write_bytes(b"x")
    elsewhere = tmp_path / "elsewhere" / "deep"
    elsewhere.mkdir(parents=True)
    (elsewhere / "y.jpg").write_bytes(b"y")
    os.symlink(elsewhere, root / "img" / "linked")  # a folder link leaving the root
    os.symlink(root / "img" / "a" / "x.jpg", root / "img" / "a" / "alias.jpg")
    os.symlink(elsewhere / "y.jpg", root / "img" / "a" / "out.jpg")
    os.symlink("nowhere.jpg", root / "img" / "a" / "dangling.jpg")
    names = [
        "img/a/x.jpg",
        "img/a/alias.jpg",
        "img/a/out.jpg",
        "img/a/dangling.jpg",
        "img/a/missing.jpg",
        "img/missing/x.jpg",
        "img/linked/y.jpg",
        "img/linked/../y.jpg",  # '..' after a folder link: the link's parent, not img/
        "img/linked/..",
        "img/./a//x.jpg",
        "img/a/x.jpg/",
        "img/a/x.jpg/inner.jpg",  # a file used as a folder
        "../shop/img/a/x.jpg",
        str(elsewhere / "y.jpg"),
        ".",
    ]
    resolve = _Resolver()
    for _ in range(2):  # the second round answers from the folder cache
        for name in names:
            assert resolve(os.path.join(root, name)) == str((root / name).resolve()), name
