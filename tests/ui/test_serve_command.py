"""`vsearch serve` options: flags over VSEARCH_* variables over defaults."""

from __future__ import annotations

import argparse

import pytest

from cli.commands.serve import options_from
from cli.main import build_parser
from search import ConfigError


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def test_defaults_bind_loopback() -> None:
    opts = options_from(parse(), env={})
    assert (opts.host, opts.port, opts.auth) == ("127.0.0.1", 7860, None)
    assert opts.max_upload_bytes == 10 * 1024 * 1024 and opts.min_score is None


def test_env_then_flags() -> None:
    env = {
        "VSEARCH_HOST": "0.0.0.0",
        "VSEARCH_PORT": "8080",
        "VSEARCH_AUTH": "shop:pa:ss",
        "VSEARCH_MAX_UPLOAD_MB": "2.5",
    }
    opts = options_from(parse(), env=env)
    assert (opts.host, opts.port, opts.auth) == ("0.0.0.0", 8080, ("shop", "pa:ss"))
    assert opts.max_upload_bytes == int(2.5 * 1024 * 1024)
    opts = options_from(parse("--host", "127.0.0.1", "--port", "9000", "--auth", "a:b"), env=env)
    assert (opts.host, opts.port, opts.auth) == ("127.0.0.1", 9000, ("a", "b"))
    opts = options_from(parse("--min-score", "0.3", "--page-size", "24"), env={})
    assert (opts.min_score, opts.page_size) == (0.3, 24)


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (("--auth", "nopassword"), {}),
        (("--port", "70000"), {}),
        (("--max-upload-mb", "0"), {}),
        (("--page-size", "0"), {}),
        ((), {"VSEARCH_PORT": "http"}),
        ((), {"VSEARCH_AUTH": ":x"}),
    ],
)
def test_bad_options_are_config_errors(argv: tuple[str, ...], env: dict) -> None:
    with pytest.raises(ConfigError):
        options_from(parse(*argv), env=env)
