"""Options declared once: a dataclass field carries its default, type, choices and help.

The CLI derives its flags from these fields (``cli/flags.py``) and :class:`search.config.Settings`
its ``VSEARCH_*`` variables, so adding an option is one edit: a field in its dataclass (for a
setting, a field of one section of ``Settings``: the section is the class it is declared in).

    @dataclass(frozen=True)
    class IndexOptions:
        batch_size: int = option(0, "images per forward pass (0: chosen per device)")

Field types are converted for real from their annotations (``int``, ``float``, ``bool``,
``str``, ``X | None``, ``tuple[str, ...]``) by :func:`convert`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ConfigError

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    choices: tuple[str, ...] | None = None,
    factory: Callable[[], Any] | None = None,
    flag: bool = True,
    metavar: str | None = None,
    parse: Callable[[str], Any] | None = None,
    name: str | None = None,
) -> Any:
    """A dataclass field with its help text (``flag=False``: not offered on the CLI).

    ``parse`` turns a flag's text into the field's value (e.g. ``Shard.parse`` for "2/4");
    it may raise ConfigError. ``name``: the flag's and variable's spelling when it differs
    from the field's (``max_upload_bytes`` is given as ``--max-upload-mb``).
    """
    meta = {
        "name": name,
        "help": help,
        "parse": parse,
        "choices": choices,
        "flag": flag,
        "metavar": metavar,
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def public_name(f: dataclasses.Field) -> str:
    """How a field is spelled as a flag (with dashes) and a variable (upper case)."""
    return f.metadata.get("name") or f.name


def from_text(f: dataclasses.Field, hint: Any, label: str, raw: str) -> Any:
    """A field's value from text: its ``parse`` function, else its type."""
    parse = f.metadata.get("parse")
    return parse(raw) if parse is not None else convert(label, raw, hint)


def from_env(cls: type, env: Mapping[str, str], prefix: str) -> dict[str, Any]:
    """The fields of ``cls`` set in ``env`` (``prefix`` + NAME), converted to their types."""
    values = {}
    for f, hint in described_fields(cls):
        label = prefix + public_name(f).upper()
        raw = env.get(label)
        if raw is not None and raw != "":
            values[f.name] = from_text(f, hint, label, raw)
    return values


def described_fields(cls: type) -> list[tuple[dataclasses.Field, type]]:
    """The fields of ``cls`` with their resolved types, in declaration order."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def base_type(hint: Any) -> tuple[Any, bool]:
    """``(type, optional)``: ``int | None`` -> ``(int, True)``; ``tuple[str, ...]`` kept."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else str), True
    return hint, False


def convert(name: str, raw: str, hint: Any) -> Any:
    """Text (an environment variable, a flag) -> the field's type, or ConfigError."""
    kind, optional = base_type(hint)
    if optional and raw.strip().lower() in ("", "none"):
        return None
    try:
        if kind is bool:
            low = raw.strip().lower()
            if low in TRUE | FALSE:
                return low in TRUE
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if typing.get_origin(kind) is tuple:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError as exc:
        name_of = getattr(kind, "__name__", str(kind))
        raise ConfigError(f"{name}={raw!r} is not a valid {name_of}") from exc
    return raw


def check_choices(obj: Any) -> None:
    """Raise ConfigError when a field with ``choices`` holds another value."""
    for f in dataclasses.fields(obj):
        choices = f.metadata.get("choices")
        value = getattr(obj, f.name)
        if choices and value not in choices and not (value in ("", None) and "" not in choices):
            raise ConfigError(f"{f.name} must be one of {', '.join(choices)}, not {value!r}")
