"""`vsearch serve --concurrency` / VSEARCH_CONCURRENCY reach the page's search queue."""

from __future__ import annotations

import pytest

from cli.commands.serve import options_from
from cli.main import build_parser
from search import ConfigError


def parse(*argv: str):  # noqa: ANN201
    return build_parser().parse_args(["serve", *argv])


def test_concurrency_from_flag_then_env_then_default() -> None:
    assert options_from(parse(), env={}).concurrency == 4
    assert options_from(parse(), env={"VSEARCH_CONCURRENCY": "6"}).concurrency == 6
    env = {"VSEARCH_CONCURRENCY": "6"}
    assert options_from(parse("--concurrency", "2"), env=env).concurrency == 2
    for bad in ("0", "65"):
        with pytest.raises(ConfigError, match="concurrency"):
            options_from(parse("--concurrency", bad), env={})
    with pytest.raises(ConfigError):
        options_from(parse(), env={"VSEARCH_CONCURRENCY": "many"})
