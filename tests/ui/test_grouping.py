"""One tile per product: Searcher's grouping of photos by a manifest column."""

from __future__ import annotations

from search import Match
from search.searcher import ProductMatch, group_key, group_matches


def m(id_: str, score: float, **meta: object) -> Match:
    return Match(id_, score, "", dict(meta))


def test_photos_of_one_product_are_one_entry_with_their_count() -> None:
    hits = [
        m("cup-1", 0.91, product="cup"),
        m("bike-1", 0.80, group="bike"),
        m("cup-2", 0.85, product="cup"),
        m("loose", 0.70),
        m("cup-3", 0.95, product="cup"),
        m("bike-2", 0.60, group="bike"),
    ]
    groups = group_matches(hits, ("product", "group"))
    assert [g.id for g in groups] == ["cup-3", "bike-1", "loose"]
    assert [g.photos for g in groups] == [3, 2, 1]
    assert groups[0].ids == ("cup-3", "cup-1", "cup-2") and groups[0].score == 0.95
    assert all(isinstance(g, ProductMatch) for g in groups)
    assert groups[0].to_dict()["photos"] == 3


def test_group_key_prefers_the_first_key_and_falls_back_to_the_id() -> None:
    assert group_key(m("a", 1, product="p", group="g"), ("product", "group")) == "product=p"
    assert group_key(m("a", 1, product="", group="g"), ("product", "group")) == "group=g"
    assert group_key(m("a", 1, product=None), "product") == "id=a"
    assert group_key(m("a", 1, product=7), "product") == "product=7"
