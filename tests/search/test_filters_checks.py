"""Filters checked against the catalog (unknown fields, kinds), bounds and request limits."""

import pytest

from search.errors import ConfigError
from search.filters import (
    MAX_FIELDS,
    MAX_TOTAL_VALUES,
    Range,
    check_fields,
    compile_filters,
    filter_values,
)

FIELDS = {"category": "text", "price": "number", "brand": "text", "size": "mixed"}


def test_unknown_field_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="unknown filter field 'colour'") as info:
        check_fields({"colour": "red"}, FIELDS)
    assert "brand, category, price, size" in str(info.value)  # says what exists
    check_fields({"category": "shoes", "id": "x", "image": "y"}, FIELDS)  # columns are fine


@pytest.mark.parametrize(
    "spec",
    ["cheap", ["cheap"], [1, "2"], {"eq": "cheap"}, {"in": [3, "x"]}, True],
)
def test_text_for_a_numeric_field_is_refused(spec) -> None:
    with pytest.raises(ConfigError, match="'price'.* is not a number"):
        check_fields({"price": spec}, FIELDS)


def test_numbers_and_ranges_on_the_right_fields_pass() -> None:
    check_fields({"price": 10, "size": "XL"}, FIELDS)
    check_fields({"price": [1, 2.5], "size": {"gte": 3}}, FIELDS)
    check_fields({"price": Range(1, 2)}, FIELDS)
    with pytest.raises(ConfigError, match="a range needs a numeric field"):
        check_fields({"category": {"gte": 3}}, FIELDS)


@pytest.mark.parametrize(
    "spec",
    [Range(50, 10), {"gte": 50, "lte": 10}, {"gt": 5, "lt": 5}, {"gte": 5, "lt": 5}],
)
def test_min_above_max_is_refused_with_a_message_that_says_so(spec) -> None:
    with pytest.raises(ConfigError, match="minimum .* is above the maximum"):
        compile_filters({"price": spec})
    assert compile_filters({"price": {"gte": 5, "lte": 5}}) == (
        '(metadata["price"] >= 5) and (metadata["price"] <= 5)'
    )


def test_duplicate_values_are_compared_once() -> None:
    assert compile_filters({"brand": ["a", "a", "b", "a"]}) == (
        '(metadata["brand"] == "a" or metadata["brand"] == "b")'
    )
    assert filter_values({"brand": ["a"] * 5000, "price": {"gte": 1}}) == 2


def test_request_limits_on_fields_and_values() -> None:
    one_thousand = {"sku": [f"v{i}" for i in range(1000)]}
    assert compile_filters(one_thousand).count(" or ") == 999  # 1,000 values: allowed
    too_many = {f"f{k}": [f"v{i}" for i in range(200)] for k in range(6)}
    assert filter_values(too_many) == 1200 > MAX_TOTAL_VALUES
    with pytest.raises(ConfigError, match="too many filter values: 1,200"):
        compile_filters(too_many)
    with pytest.raises(ConfigError, match="too many filter fields"):
        compile_filters({f"f{k}": 1 for k in range(MAX_FIELDS + 1)})
