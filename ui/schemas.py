"""Request and response models of the HTTP API (they make the OpenAPI schema).

Filters are structured JSON - ``{"category": "shoes", "brand": ["a", "b"],
"price": {"gte": 10, "lt": 50}}`` - validated here and compiled by ``search.filters``;
raw Milvus expressions are never accepted.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, TypeAdapter

from search.filters import MAX_FIELDS, MAX_IN_VALUES
from search.searcher import MAX_LIMIT, MAX_OFFSET

NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
FIELD_NAME = r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$"
SAFE_INT = 2**53

Text = Annotated[str, Field(max_length=1000, pattern=NO_CONTROL)]
Int = Annotated[int, Field(ge=-SAFE_INT, le=SAFE_INT)]
Num = Annotated[float, Field(ge=-1e300, le=1e300, allow_inf_nan=False)]
Scalar = StrictBool | Int | Num | Text
ItemId = Annotated[str, Field(min_length=1, max_length=1024, pattern=NO_CONTROL)]


class RangeSpec(BaseModel):
    """Operators on one field: bounds (gte/gt/lte/lt), equality (eq) or membership (in)."""

    model_config = ConfigDict(extra="forbid")
    gte: Int | Num | None = None
    gt: Int | Num | None = None
    lte: Int | Num | None = None
    lt: Int | Num | None = None
    eq: Scalar | None = None
    in_: Annotated[list[Scalar], Field(min_length=1, max_length=MAX_IN_VALUES)] | None = Field(
        None, alias="in"
    )


FilterValue = (
    Scalar | Annotated[list[Scalar], Field(min_length=1, max_length=MAX_IN_VALUES)] | RangeSpec
)
Filters = Annotated[
    dict[Annotated[str, Field(pattern=FIELD_NAME)], FilterValue], Field(max_length=MAX_FIELDS)
]
FILTERS = TypeAdapter(Filters)


def plain_filters(filters: dict[str, Any] | None) -> dict[str, Any] | None:
    """Validated filter models -> the plain mapping ``search.filters`` compiles."""
    if not filters:
        return None
    out: dict[str, Any] = {}
    for key, value in filters.items():
        if isinstance(value, RangeSpec):
            out[key] = value.model_dump(by_alias=True, exclude_none=True)
        else:
            out[key] = value
    return out


GroupKey = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class Paging(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(10, ge=1, le=MAX_LIMIT, description="results per page")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="results to skip (paging)")
    filters: Filters | None = Field(None, description="structured metadata filters")
    min_score: Num | None = Field(None, description="drop results below this similarity")
    group_by: GroupKey | None = Field(
        None,
        description="a metadata key grouping photos of one product (e.g. product): one result "
        "per product, saying how many of its photos matched",
    )


class IdQuery(Paging):
    id: ItemId = Field(description="catalog id: neighbours of this item ('more like this')")


class TextQuery(Paging):
    text: Annotated[str, Field(min_length=1, max_length=1000)] = Field(
        description="text description (models with a text tower only)"
    )


class MatchOut(BaseModel):
    id: str
    score: float
    image: str = Field(description="the image's file name, or its URL (never a server path)")
    image_url: str = Field(description="where to fetch the image (this API or the URL)")
    metadata: dict[str, Any]
    confident: bool | None = Field(
        None,
        description="the score clears the catalog's calibrated close-match floor (null when "
        "the catalog has no calibration)",
    )
    group: str | None = Field(None, description="with group_by: the product's key")
    photos: int | None = Field(None, description="with group_by: its photos that matched")
    ids: list[str] | None = Field(None, description="with group_by: those photos' ids, best first")


class SearchResponse(BaseModel):
    matches: list[MatchOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page, null at the end")


class ItemOut(BaseModel):
    item: MatchOut


class CollectionOut(BaseModel):
    name: str
    model: dict[str, Any] | None
    count: int
    aliases: list[str]


class InfoOut(BaseModel):
    collection: str = Field(description="the alias queries go to")
    live: CollectionOut
    has_text: bool


class FacetsOut(BaseModel):
    values: dict[str, list[Any]]
    range_key: str
    range: list[float] | None


class HealthOut(BaseModel):
    status: str
    collection: str
    count: int
    model: str
    error: str


class ErrorOut(BaseModel):
    """Every error reply of the server (API, auth, limits) has this one shape."""

    detail: str = Field(description="what went wrong, in one sentence")
    error: str = Field(
        description="error class (search.errors), e.g. ItemNotFound, ConfigError, "
        "AuthenticationError, RequestTooCostly, ServerBusy"
    )
