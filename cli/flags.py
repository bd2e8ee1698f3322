"""Command-line flags derived from option dataclasses (see ``search/options.py``).

``add_flags(parser, FinetuneOptions)`` offers every field as ``--field-name`` with the field's
type, choices, default and help; ``build(FinetuneOptions, args)`` turns the parsed flags back
into the dataclass. A boolean that defaults to True becomes ``--no-field-name``.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, TypeVar

from search.options import base_type, described_fields, public_name

T = TypeVar("T")


def _flag(name: str, negative: bool = False) -> str:
    return ("--no-" if negative else "--") + name.replace("_", "-")


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    only: tuple[str, ...] | None = None,
    skip: tuple[str, ...] = (),
    unset: bool = False,
    env_prefix: str = "",
) -> None:
    """Add a flag per field of ``cls`` that has help text (and ``flag=True``).

    ``unset``: flags default to None ("not given"), for settings whose defaults come from the
    environment first; the help then names the variable (``env_prefix`` + NAME).
    """
    for f, hint in described_fields(cls):
        meta = f.metadata
        if not meta.get("help") or not meta.get("flag", True) or f.name in skip:
            continue
        if only is not None and f.name not in only:
            continue
        default = None if f.default is dataclasses.MISSING else f.default
        help_text = meta["help"]
        spelled = public_name(f)
        if env_prefix:
            help_text += f" (env {env_prefix}{spelled.upper()})"
        kind, _ = base_type(hint)
        if kind is bool:
            negative = bool(default) and not unset
            parser.add_argument(
                _flag(spelled, negative),
                dest=f.name,
                action="store_false" if negative else "store_true",
                default=None if unset else default,
                help=help_text,
            )
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "help": help_text}
        if meta.get("parse"):
            pass  # text; build() parses it, so a bad value is a ConfigError (exit code 2)
        elif typing.get_origin(kind) is tuple:
            kwargs["nargs"] = "+"
        elif kind in (int, float):
            kwargs["type"] = kind
        if meta.get("choices"):
            kwargs["choices"] = list(meta["choices"])
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        kwargs["default"] = None if unset else default
        parser.add_argument(_flag(spelled), **kwargs)


def given(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of ``cls`` that ``args`` holds and that were given (not None)."""
    values = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if f.metadata.get("parse") is not None and isinstance(value, str):
            value = f.metadata["parse"](value)
        values[f.name] = tuple(value) if isinstance(value, list) else value
    return values


def build(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """``cls`` from the parsed flags (fields not offered keep their defaults)."""
    return cls(**{**given(cls, args), **overrides})
