"""Structured metadata filters compiled to safely quoted Milvus boolean expressions.

Users never write expressions: they pass a mapping of field name to a value (equality), a
list/tuple/set (membership) or a :class:`Range` (numeric bounds); JSON-friendly operator
dicts such as ``{"gte": 10, "lt": 50}`` or ``{"in": [...]}`` are accepted too. Field names
are checked against a strict pattern and every value is rendered as a literal, so text a
user typed can never change the expression's structure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
TOP_LEVEL_FIELDS = {"id": "id", "image": "image"}
MAX_IN_VALUES = 1000  # values in one field's list
MAX_FIELDS = 16  # fields in one filter mapping
MAX_TOTAL_VALUES = 1000  # values over all fields: each is one clause Milvus Lite checks per row


@dataclass(frozen=True)
class Range:
    """Numeric bounds; ``None`` leaves a side open."""

    min: float | None = None
    max: float | None = None
    min_inclusive: bool = True
    max_inclusive: bool = True


def quote(value: str) -> str:
    """Render ``value`` as a Milvus string literal with every special character escaped."""
    out = ['"']
    for ch in value:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _literal(value: Any, field: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ConfigError(f"filter {field!r}: {value!r} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        return quote(value)
    raise ConfigError(f"filter {field!r}: unsupported value type {type(value).__name__}")


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"filter {field!r}: range bound {value!r} is not a finite number")
    return value


def field_expr(name: str) -> str:
    """The Milvus expression for a field: top-level columns or keys of the metadata JSON."""
    if not isinstance(name, str) or not FIELD_RE.match(name):
        raise ConfigError(f"invalid filter field name {name!r}")
    return TOP_LEVEL_FIELDS.get(name) or f"metadata[{quote(name)}]"


def _range_expr(target: str, rng: Range, name: str) -> list[str]:
    if rng.min is not None and rng.max is not None:
        low, high = _number(rng.min, name), _number(rng.max, name)
        if low > high or (low == high and not (rng.min_inclusive and rng.max_inclusive)):
            raise ConfigError(
                f"filter {name!r}: the minimum ({low:g}) is above the maximum ({high:g}); "
                "nothing can match"
            )
    parts = []
    if rng.min is not None:
        parts.append(
            f"{target} {'>=' if rng.min_inclusive else '>'} {_literal(_number(rng.min, name), name)}"
        )
    if rng.max is not None:
        parts.append(
            f"{target} {'<=' if rng.max_inclusive else '<'} {_literal(_number(rng.max, name), name)}"
        )
    if not parts:
        raise ConfigError(f"filter {name!r}: a range needs a min or a max")
    return parts


def _from_operator_dict(spec: Mapping[str, Any], name: str) -> Any:
    ops = set(spec)
    if ops <= {"gte", "gt", "lte", "lt"} and ops:
        return Range(
            min=spec.get("gte", spec.get("gt")),
            max=spec.get("lte", spec.get("lt")),
            min_inclusive="gt" not in spec,
            max_inclusive="lt" not in spec,
        )
    if ops == {"eq"}:
        return spec["eq"]
    if ops == {"in"}:
        if not isinstance(spec["in"], list | tuple):
            raise ConfigError(f"filter {name!r}: 'in' needs a list")
        return list(spec["in"])
    raise ConfigError(
        f"filter {name!r}: unknown operators {sorted(ops)} (eq, in, gte, gt, lte, lt)"
    )


def compile_filters(filters: Mapping[str, Any] | None) -> str:
    """Compile a filter mapping into one Milvus expression ('' when there is nothing to do)."""
    if not filters:
        return ""
    if not isinstance(filters, Mapping):
        raise ConfigError("filters must be a mapping of field name to value")
    check_limits(filters)
    clauses: list[str] = []
    for name, spec in filters.items():
        target = field_expr(name)
        if isinstance(spec, Mapping):
            spec = _from_operator_dict(spec, name)
        if spec is None:
            continue
        if isinstance(spec, Range):
            clauses.extend(_range_expr(target, spec, name))
        elif isinstance(spec, list | tuple | set | frozenset):
            values = _distinct(spec)
            if not values:
                raise ConfigError(f"filter {name!r}: empty list of values")
            if len(values) > MAX_IN_VALUES:
                raise ConfigError(f"filter {name!r}: more than {MAX_IN_VALUES} values")
            literals = [_literal(v, name) for v in values]
            if target in TOP_LEVEL_FIELDS.values():
                clauses.append(f"{target} in [{', '.join(literals)}]")
            else:  # Milvus Lite cannot apply `in` to a JSON path: spell it out
                clauses.append(" or ".join(f"{target} == {lit}" for lit in literals))
        else:
            clauses.append(f"{target} == {_literal(spec, name)}")
    return " and ".join(f"({c})" for c in clauses)


def _distinct(values: Any) -> list[Any]:
    """The values of a membership filter, duplicates dropped (1 == 1.0 == True aside)."""
    items = sorted(values, key=repr) if isinstance(values, set | frozenset) else list(values)
    seen: set[tuple[str, Any]] = set()
    out = []
    for v in items:
        key = (type(v).__name__, v if isinstance(v, str | int | float | bool) else repr(v))
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out


def _values_of(spec: Any) -> list[Any]:
    """The scalar values a filter spec compares with (range bounds aside)."""
    if isinstance(spec, Mapping):
        if "in" in spec and isinstance(spec["in"], list | tuple):
            return list(spec["in"])
        return [spec["eq"]] if "eq" in spec else []
    if isinstance(spec, Range) or spec is None:
        return []
    if isinstance(spec, list | tuple | set | frozenset):
        return _distinct(spec)
    return [spec]


def filter_values(filters: Mapping[str, Any] | None) -> int:
    """How many values (clauses) a filter mapping compares: its cost per row on Milvus Lite."""
    if not filters or not isinstance(filters, Mapping):
        return 0
    total = 0
    for spec in filters.values():
        if isinstance(spec, list | tuple | set | frozenset):
            total += len(_distinct(spec))
        elif isinstance(spec, Mapping) and isinstance(spec.get("in"), list | tuple):
            total += len(_distinct(spec["in"]))
        else:
            total += 1
    return total


def check_limits(filters: Mapping[str, Any] | None) -> None:
    """Refuse more than :data:`MAX_FIELDS` fields or :data:`MAX_TOTAL_VALUES` values."""
    if not filters or not isinstance(filters, Mapping):
        return
    if len(filters) > MAX_FIELDS:
        raise ConfigError(f"too many filter fields: {len(filters)} (at most {MAX_FIELDS})")
    if filter_values(filters) > MAX_TOTAL_VALUES:
        raise ConfigError(
            f"too many filter values: {filter_values(filters):,} over all fields "
            f"(at most {MAX_TOTAL_VALUES:,})"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_fields(filters: Mapping[str, Any] | None, fields: Mapping[str, str]) -> None:
    """Refuse filters on fields the catalog does not have, or of the wrong kind.

    ``fields`` maps each metadata key of the collection to its kind ("number", "text",
    "bool" or "mixed", see :meth:`search.store.MilvusStore.metadata_fields`). Without this a
    typo (``colour=red``) or a text price (``{"price": "cheap"}``) silently matches nothing.
    """
    if not filters or not isinstance(filters, Mapping):
        return
    for name, spec in filters.items():
        if name in TOP_LEVEL_FIELDS:
            kind = "text"
        elif name in fields:
            kind = fields[name]
        else:
            known = ", ".join(sorted(fields)) or "none"
            raise ConfigError(f"unknown filter field {name!r}; this catalog's fields: {known}")
        is_range = isinstance(spec, Range) or (
            isinstance(spec, Mapping) and bool(set(spec) & {"gte", "gt", "lte", "lt"})
        )
        if is_range and kind not in ("number", "mixed"):
            raise ConfigError(f"filter {name!r}: a range needs a numeric field; {name!r} is {kind}")
        if kind != "number":
            continue
        for value in _values_of(spec):
            if not _is_number(value):
                raise ConfigError(
                    f"filter {name!r}: {value!r} is not a number ({name!r} is a numeric field)"
                )


_OPS = ((">=", "gte"), ("<=", "lte"), ("!=", None), (">", "gt"), ("<", "lt"), ("=", "eq"))


def parse_filter_args(
    args: list[str], numeric_columns: tuple[str, ...] = ("price",)
) -> dict[str, Any]:
    """Parse command-line filters: ``key=value``, ``key=a|b`` (any of), ``key>=10``, ``key<50``.

    Clauses on the same key are merged (``price>=10 price<50`` is one range).
    """
    out: dict[str, Any] = {}
    for arg in args:
        key, op, value = _split_filter(arg)
        if op is None:
            raise ConfigError(f"filter {arg!r}: '!=' is not supported")
        key = key.strip()
        if op == "eq":
            values = [_cli_value(v, key in numeric_columns, arg) for v in value.split("|")]
            out[key] = values[0] if len(values) == 1 else values
            continue
        bounds = dict(out[key]) if isinstance(out.get(key), dict) else {}
        bounds[op] = _cli_value(value, True, arg)
        out[key] = bounds
    return out


def _split_filter(arg: str) -> tuple[str, str | None, str]:
    """Split ``key<op>value`` at its first comparison operator."""
    for token, op in _OPS:
        key, sep, value = arg.partition(token)
        if sep and key and "=" not in key and "<" not in key and ">" not in key:
            return key, op, value
    raise ConfigError(f"cannot parse filter {arg!r}; use key=value, key=a|b, key>=n, key<n")


def _cli_value(raw: str, numeric: bool, arg: str) -> Any:
    raw = raw.strip()
    if not numeric:
        return raw
    try:
        num = float(raw)
    except ValueError:
        raise ConfigError(f"filter {arg!r}: {raw!r} is not a number") from None
    if not math.isfinite(num):
        raise ConfigError(f"filter {arg!r}: {raw!r} is not a finite number")
    return num
