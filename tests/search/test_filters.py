import pytest

from search.errors import ConfigError
from search.filters import Range, compile_filters, parse_filter_args, quote


def test_equality_membership_and_range_compile_to_quoted_expressions() -> None:
    expr = compile_filters(
        {"category": "shoes", "brand": ["Acme", "Globex"], "price": Range(10, 50)}
    )
    assert expr == (
        '(metadata["category"] == "shoes") and '
        '(metadata["brand"] == "Acme" or metadata["brand"] == "Globex") and '
        '(metadata["price"] >= 10) and (metadata["price"] <= 50)'
    )


def test_operator_dicts_from_json() -> None:
    assert compile_filters({"price": {"gt": 1, "lt": 2.5}}) == (
        '(metadata["price"] > 1) and (metadata["price"] < 2.5)'
    )
    assert compile_filters({"id": {"in": ["a", "b"]}}) == '(id in ["a", "b"])'
    assert compile_filters({"size": {"eq": 3}}) == '(metadata["size"] == 3)'


@pytest.mark.parametrize(
    "value, literal",
    [
        ('x" or id != "', '"x\\" or id != \\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("line\nbreak", '"line\\nbreak"'),
        ("bell\x07", '"bell\\u0007"'),
        ("ünïcødé ✓", '"ünïcødé ✓"'),
    ],
)
def test_user_text_is_always_a_single_string_literal(value: str, literal: str) -> None:
    assert quote(value) == literal
    assert compile_filters({"title": value}) == f'(metadata["title"] == {literal})'


@pytest.mark.parametrize(
    "filters",
    [
        {'category"] or 1==1 or metadata["x': "a"},
        {"": "a"},
        {"a b": 1},
        {"price": Range()},
        {"price": Range(min="10")},  # type: ignore[arg-type]
        {"price": {"gte": float("nan")}},
        {"price": float("inf")},
        {"tags": []},
        {"x": {"regex": ".*"}},
        {"x": object()},
    ],
)
def test_invalid_filters_raise_config_error(filters: dict) -> None:
    with pytest.raises(ConfigError):
        compile_filters(filters)


def test_empty_filters_compile_to_nothing() -> None:
    assert compile_filters(None) == ""
    assert compile_filters({}) == ""
    assert compile_filters({"category": None}) == ""


def test_cli_filter_syntax() -> None:
    parsed = parse_filter_args(
        ["category=shoes", "brand=a|b", "price>=10", "price<50", "title=a>=b"]
    )
    assert parsed == {
        "category": "shoes",
        "brand": ["a", "b"],
        "price": {"gte": 10.0, "lt": 50.0},
        "title": "a>=b",
    }
    assert parse_filter_args(["price=12.5"]) == {"price": 12.5}
    with pytest.raises(ConfigError):
        parse_filter_args(["price>=cheap"])
    with pytest.raises(ConfigError):
        parse_filter_args(["nonsense"])
    with pytest.raises(ConfigError, match="not supported"):
        parse_filter_args(["brand!=Acme"])
