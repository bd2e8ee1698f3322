"""Settings in sections: flat variables and names routed to their sections, and refused when
unknown or declared twice."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from search.config import (
    SECTIONS,
    IndexingSettings,
    ModelSettings,
    SearchSettings,
    Settings,
    StoreSettings,
    flat_index,
    setting_fields,
)
from search.errors import ConfigError
from search.options import option, public_name


def test_settings_are_four_frozen_sections_with_defaults():
    s = Settings()
    assert list(SECTIONS) == ["store", "model", "indexing", "search"]
    assert isinstance(s.store, StoreSettings) and isinstance(s.model, ModelSettings)
    assert isinstance(s.indexing, IndexingSettings) and isinstance(s.search, SearchSettings)
    assert (s.store.uri, s.store.collection, s.search.query_crops) == (
        "./data/vsearch.db",
        "catalog",
        "nine",
    )
    assert s.model.model == "builtin:efficientnet-lite0" and s.store.is_lite
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.store.uri = "elsewhere"  # type: ignore[misc]
    # no flat attribute: the sections are the only way in
    assert not hasattr(s, "uri") and not hasattr(s, "cache_dir")


def test_of_routes_each_flat_name_to_its_section():
    s = Settings.of(uri="http://127.0.0.1:19530", cache_dir="/tmp/c", workers=0, min_score=0.3)
    assert s.store.uri == "http://127.0.0.1:19530" and not s.store.is_lite
    assert s.model.cache_dir == "/tmp/c"
    assert s.indexing.workers == 0 and s.search.min_score == 0.3
    assert s.store.collection == "catalog"  # the rest keep their defaults
    assert s == Settings(
        store=StoreSettings(uri="http://127.0.0.1:19530"),
        model=ModelSettings(cache_dir="/tmp/c"),
        indexing=IndexingSettings(workers=0),
        search=SearchSettings(min_score=0.3),
    )


def test_replace_routes_changes_and_keeps_the_rest():
    base = Settings.of(uri="a.db", collection="shoes", device="cpu")
    copy = base.replace(collection="hats", query_crops="none", batch_size=4)
    assert (copy.store.uri, copy.store.collection) == ("a.db", "hats")
    assert (copy.search.query_crops, copy.indexing.batch_size) == ("none", 4)
    assert copy.model is base.model  # untouched sections are shared, not copied
    assert base.store.collection == "shoes"  # the original is unchanged
    assert copy.flat()["collection"] == "hats" and set(copy.flat()) == set(Settings().flat())


def test_unknown_names_are_refused_by_name():
    with pytest.raises(ConfigError, match="unknown setting\\(s\\): colection"):
        Settings.of(colection="x")
    with pytest.raises(ConfigError, match="unknown setting\\(s\\): nope, uri_typo"):
        Settings().replace(nope=1, uri_typo="x")
    with pytest.raises(ConfigError, match="store"):  # a section is not a flat name
        Settings.of(store=StoreSettings())
    with pytest.raises(ConfigError, match="query_crops must be one of"):
        Settings.of(query_crops="seven")


def test_environment_names_are_flat_and_typed():
    env = {
        "VSEARCH_URI": "http://db:19530",
        "VSEARCH_MODEL": "ViT-B-32",
        "VSEARCH_QUERY_CROPS": "five",
        "VSEARCH_MALLOC_TUNING": "off",  # a bool
        "VSEARCH_ALLOWED_ROOTS": "/srv/a, /srv/b",  # a tuple
        "VSEARCH_WORKERS": "2",
        "VSEARCH_ALIAS_TTL": "0.5",
    }
    s = Settings.from_env(env)
    assert s.store.uri == "http://db:19530" and s.model.model == "ViT-B-32"
    assert s.search.query_crops == "five" and s.search.alias_ttl == 0.5
    assert s.model.malloc_tuning is False
    assert s.indexing.allowed_roots == ("/srv/a", "/srv/b")
    assert s.indexing.workers == 2
    # overrides are flat names; None means "not given" (a flag left out)
    s = Settings.from_env(env, collection="shoes", workers=None, model="local-dir:/m")
    assert (s.store.collection, s.indexing.workers, s.model.model) == ("shoes", 2, "local-dir:/m")
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings.from_env({}, colour="red")
    with pytest.raises(ConfigError, match="VSEARCH_MALLOC_TUNING='perhaps' is not a valid bool"):
        Settings.from_env({"VSEARCH_MALLOC_TUNING": "perhaps"})


def test_every_setting_has_one_section_help_and_a_unique_name():
    names = [f.name for _, f in setting_fields()]
    assert len(names) == len(set(names))
    spelled = [public_name(f) for _, f in setting_fields()]
    assert len(spelled) == len(set(spelled))
    assert all(f.metadata.get("help") for _, f in setting_fields())
    assert set(flat_index(SECTIONS)) == set(names)


def test_a_name_declared_in_two_sections_is_refused():
    @dataclass(frozen=True)
    class One:
        uri: str = option("x", "one")

    @dataclass(frozen=True)
    class Two:
        uri: str = option("y", "two")

    @dataclass(frozen=True)
    class Spelled:
        address: str = option("z", "spelled as uri", name="uri")

    assert flat_index({"a": One}) == {"uri": "a"}
    with pytest.raises(ConfigError, match="'uri' declared in both a and b"):
        flat_index({"a": One, "b": Two})
    with pytest.raises(ConfigError, match="'uri' declared in both a and b"):
        flat_index({"a": One, "b": Spelled})  # the same VSEARCH_URI variable
