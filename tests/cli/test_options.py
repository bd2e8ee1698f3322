"""Options declared once: typed conversion from text, and CLI flags derived from the fields."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import pytest

from cli.flags import add_flags, build
from cli.main import build_parser, settings_from
from search.config import Settings
from search.errors import ConfigError
from search.options import check_choices, convert, option


@dataclass(frozen=True)
class Example:
    size: int = option(3, "how many")
    rate: float = option(0.5, "how fast")
    name: str | None = option(None, "who")
    mode: str = option("a", "which", choices=("a", "b"))
    on: bool = option(True, "enabled")
    off: bool = option(False, "opt-in")
    tags: tuple[str, ...] = option((), "labels")
    hidden: int = option(1, "not a flag", flag=False)

    def __post_init__(self) -> None:
        check_choices(self)


def test_text_converts_by_the_fields_real_type():
    assert convert("X", "7", int) == 7
    assert convert("X", "2.5", float) == 2.5
    assert convert("X", "yes", bool) is True and convert("X", "0", bool) is False
    assert convert("X", "none", str | None) is None
    assert convert("X", "a, b,,c", tuple[str, ...]) == ("a", "b", "c")
    with pytest.raises(ConfigError, match="X='seven' is not a valid int"):
        convert("X", "seven", int)
    with pytest.raises(ConfigError):
        convert("X", "maybe", bool)


def test_environment_booleans_and_choices_are_typed_not_strings():
    settings = Settings.from_env({"VSEARCH_NUMERIC_COLUMNS": "price,weight"})
    assert settings.indexing.numeric_columns == ("price", "weight")
    with pytest.raises(ConfigError, match="query_crops must be one of"):
        Settings.from_env({"VSEARCH_QUERY_CROPS": "all"})


def test_a_new_field_is_a_flag_with_its_type_default_and_choices():
    parser = argparse.ArgumentParser()
    add_flags(parser, Example)
    assert build(Example, parser.parse_args([])) == Example()
    args = parser.parse_args(
        ["--size", "5", "--rate", "1e-3", "--name", "x", "--mode", "b", "--no-on", "--off"]
        + ["--tags", "p", "q"]
    )
    assert build(Example, args) == Example(5, 1e-3, "x", "b", False, True, ("p", "q"))
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "c"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--hidden", "2"])


def test_every_finetune_option_is_a_finetune_flag():
    from training.finetune.options import FinetuneOptions

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    dests = {a.dest for a in sub.choices["finetune"]._actions}
    assert {f.name for f in dataclasses.fields(FinetuneOptions)} <= dests
    args = build_parser().parse_args(
        ["finetune", "cat.csv", "-o", "out", "--views", "3", "--no-refit", "--batch-size", "16"]
    )
    options = build(FinetuneOptions, args)
    assert (options.views, options.refit, options.batch_size) == (3, False, 16)
    # the training batch is not the embedding batch
    assert (
        settings_from(args, skip=("batch_size",)).indexing.batch_size
        == Settings().indexing.batch_size
    )


def test_settings_flags_beat_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("VSEARCH_COLLECTION", "from-env")
    monkeypatch.setenv("VSEARCH_WORKERS", "2")
    args = build_parser().parse_args(["index", "cat.csv", "--collection", "from-flag"])
    settings = settings_from(args)
    assert (settings.store.collection, settings.indexing.workers) == ("from-flag", 2)


def test_settings_command_lists_every_setting_with_its_value_and_hides_the_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    import json

    from cli.main import main

    monkeypatch.setenv("VSEARCH_WORKERS", "3")
    monkeypatch.setenv("VSEARCH_TOKEN", "root:secret")
    assert main(["settings", "--json"]) == 0
    rows = {r["setting"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(Settings().flat())
    assert rows["workers"]["value"] == 3 and rows["workers"]["variable"] == "VSEARCH_WORKERS"
    assert rows["token"]["value"] == "***"
    assert (rows["uri"]["section"], rows["workers"]["section"]) == ("store", "indexing")
    assert rows["uri"]["flag"] == "--uri" and rows["query_crops"]["flag"] == ""
    assert all(r["help"] for r in rows.values())  # every setting says what it means


def test_help_groups_the_settings_flags_by_section():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    groups = {
        g.title: {a.option_strings[0] for a in g._group_actions if a.option_strings}
        for g in sub.choices["index"]._action_groups
    }
    assert {"--uri", "--token", "--collection"} == groups["store"]
    assert {"--model", "--pretrained", "--device", "--backend", "--precision"} == groups["model"]
    assert {"--batch-size", "--workers", "--threads", "--allow-private-urls"} == groups["indexing"]
    workers = next(a for a in sub.choices["index"]._actions if a.dest == "workers")
    assert workers.help.endswith("(env VSEARCH_WORKERS)") and workers.default is None
    assert "\nindexing:\n" in sub.choices["index"].format_help()  # the group's title
