"""Listing a project's artifacts: filters, pages in id order, and text search.

Content is never loaded for a list: pages stay small and fast.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import ColumnElement, Select, Text, bindparam, cast, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import aliased, defer, undefer

from app.artifacts.models import Artifact
from app.artifacts.schemas import ArtifactSummary
from app.db.driver import DriverRead
from app.db.pages import cut_page

# Text search walks this many of a project's rows in id order before it asks the trigram index.
SEARCH_WINDOW = 500


class ArtifactFilters(msgspec.Struct, frozen=True, kw_only=True):
    artifact_type: str | None = None
    source_agent: str | None = None
    granularity: str | None = None
    tag: str | None = None
    q: str | None = None
    created_after: datetime.datetime | None = None
    created_before: datetime.datetime | None = None
    stale: bool | None = None
    parent_id: UUID | None = None


def _like_escaped(value: str) -> str:
    """`value` matched literally by LIKE: its `%`, `_` and the escape character are not wildcards."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def quoted_element(value: str) -> str:
    """A JSON string element as it appears in stored JSON text: for exact "list contains" matches."""
    return f'%"{_like_escaped(value)}"%'


# What a list answers of each artifact: everything but its content (~2 KB of JSON a row, which
# would only feed the garbage collector). Columns, not entities: a page's rows go straight into
# summaries, with no ORM object built for each (14 % of a list's CPU).
SUMMARY_FIELDS = (
    "id",
    "project_id",
    "parent_id",
    "source_agent",
    "artifact_type",
    "granularity",
    "title",
    "version",
    "meta",
    "stale",
    "stale_reason",
    "created_at",
    "updated_at",
)


def summary_columns(entity: Any) -> list[Any]:
    """The `SUMMARY_FIELDS` of `entity` (the model, or an alias of it), each labelled with its field's
    name: on a bare connection a column is otherwise named as in the table (`meta` is `metadata`)."""
    return [getattr(entity, name).label(name) for name in SUMMARY_FIELDS]


# The unfiltered pages, the common case, built once (run by the driver on PostgreSQL).
_FIRST_PAGE = (
    select(*summary_columns(Artifact))
    .where(Artifact.project_id == bindparam("project_id"), Artifact.deleted_at.is_(None))
    .order_by(Artifact.id)
    .limit(bindparam("page_size"))
)
_FIRST_PAGE_READ = DriverRead(_FIRST_PAGE)
_NEXT_PAGE_READ = DriverRead(_FIRST_PAGE.where(Artifact.id > bindparam("cursor")))


# The unfiltered page as the api answers it, rendered by PostgreSQL (as PostgREST answers): one value
# the api sends as it is. Decoding 25 rows of 13 columns, building their summaries and encoding them
# cost the api more than the rest of the request (bench/README.md). A summary is rendered as msgspec
# renders `ArtifactSummary`: its fields in order under their names, timestamps in UTC with a `Z` and
# their microseconds unless zero (tests/integration/artifacts/test_artifact_page_json.py compares them).
def _rendered(attribute: str) -> str:
    column = Artifact.__mapper__.attrs[attribute].columns[0]
    if column.type.python_type is datetime.datetime:
        return (
            f"to_char({column.name} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
            f" || CASE to_char({column.name}, 'US') WHEN '000000' THEN '' ELSE '.' || to_char({column.name}, 'US') END"
            " || 'Z'"
        )
    return str(column.name)


def _page_json_sql(after_cursor: bool) -> str:
    fields = ArtifactSummary.__struct_fields__
    if len(fields) != len(SUMMARY_FIELDS):  # the summary and its columns name the same fields, in order
        raise AssertionError(f"ArtifactSummary {fields} against SUMMARY_FIELDS {SUMMARY_FIELDS}")
    columns = ", ".join(f'{_rendered(name)} AS "{field}"' for name, field in zip(SUMMARY_FIELDS, fields, strict=True))
    cursor = " AND id > :cursor" if after_cursor else ""
    # One row past the page says whether there is a next one; it is counted, not rendered. Only names
    # of the model and the schema go into the text; every value is a parameter.
    return f"""SELECT
    convert_to(
        coalesce(json_agg(numbered.summary ORDER BY numbered.id) FILTER (WHERE numbered.n <= :limit), '[]')::text,
        'UTF8'
    ) AS items,
    count(*) AS read,
    (array_agg(numbered.id ORDER BY numbered.id DESC) FILTER (WHERE numbered.n <= :limit))[1] AS last_id
FROM (
    SELECT summary.id, row_number() OVER (ORDER BY summary.id) AS n, summary
    FROM (
        SELECT {columns} FROM {Artifact.__tablename__}
        WHERE project_id = :project_id AND deleted_at IS NULL{cursor}
        ORDER BY id LIMIT :page_size
    ) AS summary
) AS numbered"""  # noqa: S608


_FIRST_PAGE_JSON_READ = DriverRead(text(_page_json_sql(after_cursor=False)))
_NEXT_PAGE_JSON_READ = DriverRead(text(_page_json_sql(after_cursor=True)))


async def page_json(
    connection: AsyncConnection, project_id: UUID, filters: ArtifactFilters, *, limit: int, cursor: UUID | None
) -> tuple[bytes, int, UUID | None] | None:
    """The page's summaries as the api's JSON array, rendered by PostgreSQL; their number; the next
    page's cursor. None where the page is built from rows instead: on SQLite, or with a filter."""
    if connection.dialect.name != "postgresql" or not _unfiltered(filters):
        return None
    params: dict[str, Any] = {"project_id": project_id, "limit": limit, "page_size": limit + 1}
    if cursor is not None:
        params["cursor"] = cursor
    ((items, read, last_id),) = await (_FIRST_PAGE_JSON_READ if cursor is None else _NEXT_PAGE_JSON_READ).rows(
        connection, params
    )
    return bytes(items), min(read, limit), last_id if read > limit else None


def _unfiltered(filters: ArtifactFilters) -> bool:
    return all(value is None for value in msgspec.structs.astuple(filters))


async def list_page(
    session: AsyncSession | AsyncConnection,
    project_id: UUID,
    filters: ArtifactFilters,
    *,
    limit: int,
    cursor: UUID | None,
) -> tuple[list[Sequence[Any]], UUID | None]:
    """One page of summary rows (`SUMMARY_FIELDS`, read by position) in id (creation) order."""
    if _unfiltered(filters):
        params: dict[str, Any] = {"project_id": project_id, "page_size": limit + 1}
        if cursor is not None:
            params["cursor"] = cursor
        rows = await (_FIRST_PAGE_READ if cursor is None else _NEXT_PAGE_READ).rows(session, params)
        return cut_page(list(rows), limit, key=0)
    statement = page_statement(project_id, filters, cursor)
    if not filters.q:
        return cut_page(list(await session.execute(statement.limit(limit + 1))), limit, key=0)
    # Text search. A common word fills a page from the project's first rows in id order, which a
    # walk finds at once; the trigram index would instead fetch and sort every match (bench/README.md).
    # So the first rows after the cursor are walked in order: a subquery with its own LIMIT fences
    # them off (the planner may not push the text test into it, so it cannot answer from the index),
    # its rows come out in id order (PostgreSQL knows that, so the outer ORDER BY needs no sort), and
    # the outer LIMIT stops the walk at the page's last match. Past that window, the index is asked.
    in_order = [Artifact.project_id == project_id, Artifact.deleted_at.is_(None)]
    if cursor is not None:
        in_order.append(Artifact.id > cursor)
    window = (
        select(Artifact)
        .options(defer(Artifact.content), undefer(Artifact.search_text))
        .where(*in_order)
        .order_by(Artifact.id)
        .limit(SEARCH_WINDOW)
        .subquery("search_window")
    )
    rows_in_window = aliased(Artifact, window)
    walk = (
        select(*summary_columns(rows_in_window))
        .where(*filter_conditions(rows_in_window, filters))
        .order_by(rows_in_window.id)
        .limit(limit + 1)
    )
    walked: list[Sequence[Any]] = list(await session.execute(walk))
    if len(walked) > limit:
        return cut_page(walked, limit, key=0)
    # Past the window (none if the project has no more rows): one statement, the window's last id
    # found inside it.
    last_in_window = (
        select(Artifact.id).where(*in_order).order_by(Artifact.id).offset(SEARCH_WINDOW - 1).limit(1)
    ).scalar_subquery()
    past_window = statement.where(Artifact.id > last_in_window).limit(limit + 1 - len(walked))
    rest: list[Sequence[Any]] = list(await session.execute(past_window))
    return cut_page(walked + rest, limit, key=0)


def page_statement(project_id: UUID, filters: ArtifactFilters, cursor: UUID | None) -> Select[Any]:
    statement = (
        select(*summary_columns(Artifact))
        .where(Artifact.project_id == project_id, Artifact.deleted_at.is_(None))
        .where(*filter_conditions(Artifact, filters))
    )
    if cursor is not None:
        statement = statement.where(Artifact.id > cursor)
    return statement.order_by(Artifact.id)


def filter_conditions(entity: Any, filters: ArtifactFilters) -> list[ColumnElement[bool]]:
    """The filters of a list, on `entity` (the table, or the rows of a search window)."""
    conditions: list[ColumnElement[bool]] = []
    if filters.artifact_type:
        conditions.append(entity.artifact_type == filters.artifact_type)
    if filters.source_agent:
        conditions.append(entity.source_agent == filters.source_agent)
    if filters.granularity:
        conditions.append(entity.granularity == filters.granularity)
    if filters.parent_id:
        conditions.append(entity.parent_id == filters.parent_id)
    if filters.stale is not None:
        conditions.append(entity.stale.is_(filters.stale))
    if filters.created_after:
        conditions.append(entity.created_at > filters.created_after)
    if filters.created_before:
        conditions.append(entity.created_at < filters.created_before)
    if filters.tag:
        conditions.append(cast(entity.meta["tags"], Text).like(quoted_element(filters.tag), escape="\\"))
    if filters.q:
        conditions.append(entity.search_text.like(f"%{_like_escaped(filters.q.lower())}%", escape="\\"))
    return conditions
