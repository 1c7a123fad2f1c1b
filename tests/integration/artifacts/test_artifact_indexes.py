"""The retrieval indexes serve the statements the artifact service really sends (PostgreSQL).

bench/README.md measures why they matter at 100,000 artifacts; here, on a few rows, the planner is
told not to scan the table so that it shows which index each statement can use. A change to the
service's expressions that no index matches any more fails here, not in production.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from app.artifacts.models import Artifact
from app.artifacts.search import SUMMARY_FIELDS, ArtifactFilters, list_page, page_statement
from app.config import load_settings
from app.projects.models import Project

pytestmark = pytest.mark.services


@pytest.fixture
async def session(own_services_env: dict[str, str]) -> AsyncIterator[AsyncSession]:
    engine = create_async_engine(load_settings(own_services_env).db.url)
    try:
        async with AsyncSession(engine, expire_on_commit=False) as session:
            yield session
    finally:
        await engine.dispose()


@contextlib.contextmanager
def artifact_selects(session: AsyncSession) -> Iterator[list[tuple[str, Any]]]:
    """The SELECTs of the artifact table that `session` sends meanwhile, with their parameters."""
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")) and "FROM artifact" in statement:
            sent.append((statement, parameters))

    sync_engine = session.get_bind()
    event.listen(sync_engine, "before_cursor_execute", capture)
    try:
        yield sent
    finally:
        event.remove(sync_engine, "before_cursor_execute", capture)


async def plan_of(
    session: AsyncSession, filters: ArtifactFilters, scans_off: tuple[str, ...], dropped: tuple[str, ...]
) -> str:
    """The plan of the statement `list_page` sends for `filters`, with some scan types and indexes gone.

    Without the competing indexes and scans, the planner must take the index under test if it can
    serve the statement at all; the test's transaction is rolled back, so nothing stays dropped.
    """
    project = Project(name="indexed", description="")
    session.add(project)
    await session.flush()
    with artifact_selects(session) as sent:
        if filters.q:
            # Text search walks the first rows in id order, then asks the index with this statement.
            await session.scalars(page_statement(project.id, filters, None).limit(101))
        else:
            await list_page(session, project.id, filters, limit=100, cursor=None)
    assert len(sent) == 1
    statement, parameters = sent[0]
    for scan in scans_off:
        await session.execute(text(f"SET LOCAL enable_{scan} = off"))
    for index in dropped:
        await session.execute(text(f"DROP INDEX {index}"))
    connection = await session.connection()
    result = await connection.exec_driver_sql("EXPLAIN " + statement, parameters)
    return "\n".join(row[0] for row in result)


OTHER_PROJECT_INDEXES = ("ix_artifact_project_id_created_at", "ix_artifact_project_id_artifact_type")


@pytest.mark.parametrize(
    ("filters", "scans_off", "dropped", "indexes"),
    [
        # Lists and unindexed filters walk the project's rows in id order.
        (ArtifactFilters(), ("seqscan",), OTHER_PROJECT_INDEXES, ["ix_artifact_project_id_id"]),
        (ArtifactFilters(source_agent="tester"), ("seqscan",), OTHER_PROJECT_INDEXES, ["ix_artifact_project_id_id"]),
        # Text search, with no project index and no ordered scan left, must find the trigram index.
        (
            ArtifactFilters(q="Zanzibar"),
            ("seqscan", "indexscan"),
            (*OTHER_PROJECT_INDEXES, "ix_artifact_project_id_id"),
            ["Bitmap Index Scan on ix_artifact_search_text_trgm"],
        ),
    ],
    ids=["first-page", "source-agent", "text-search"],
)
async def test_each_list_statement_can_use_its_index(
    session: AsyncSession,
    filters: ArtifactFilters,
    scans_off: tuple[str, ...],
    dropped: tuple[str, ...],
    indexes: list[str],
) -> None:
    plan = await plan_of(session, filters, scans_off, dropped)
    assert all(index in plan for index in indexes), plan


async def test_the_trigram_extension_is_installed(session: AsyncSession) -> None:
    installed = await session.scalar(text("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'"))
    assert installed == 1


async def test_text_search_walk_stops_at_the_page_it_needs(session: AsyncSession) -> None:
    """A common word fills its page from the first rows: no sort above the walk, no row read past the page."""
    project = Project(name="walked", description="")
    session.add(project)
    await session.flush()
    session.add_all(
        Artifact(
            project_id=project.id,
            artifact_type="user_input",
            title=f"note {n}",
            content={"text": "a common word in every note"},
        )
        for n in range(200)
    )
    await session.flush()
    with artifact_selects(session) as sent:
        page, cursor = await list_page(session, project.id, ArtifactFilters(q="COMMON"), limit=10, cursor=None)
    title = SUMMARY_FIELDS.index("title")  # summary rows are read by position
    assert [row[title] for row in page] == [f"note {n}" for n in range(10)]
    assert cursor == page[-1][0]
    assert len(sent) == 1  # the walk filled the page: no indexed statement past the window
    statement, parameters = sent[0]
    # On 200 rows a sort is cheap, so the planner is told to avoid one where it can: the walk must be
    # able to read the project's rows in id order from the index and stop where the page is full.
    await session.execute(text("SET LOCAL enable_sort = off"))
    connection = await session.connection()
    result = await connection.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters)
    plan = result.scalar_one()[0]["Plan"]

    def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [node, *(child for sub in node.get("Plans", []) for child in nodes(sub))]

    assert not [node for node in nodes(plan) if node["Node Type"] == "Sort"], plan
    scans = [node for node in nodes(plan) if node["Node Type"] in ("Index Scan", "Seq Scan")]
    assert scans and all(scan["Actual Rows"] <= 11 for scan in scans), plan
