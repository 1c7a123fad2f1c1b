"""What a HITL request holds up, typed: `hitl_request.hold_kind` + `hold_ref` instead of a `step_id` prefix.

`step_id` said it with a prefix (`gate:design`, `condition:3`, `interrupted:5`, `review:pending`)
or, for a task's own step, the bare step id. It becomes a kind (`app.hitl.models.HoldKind`:
step, gate, condition, interrupted, review) and the reference after the prefix; a request of no
step has neither. The downgrade writes `step_id` back the same way.

Revision ID: 8e2a5c7f1d63
Revises: 6d1f8a2c4b39
Create Date: 2026-12-07 01:10:00+00:00
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "8e2a5c7f1d63"
down_revision = "6d1f8a2c4b39"
branch_labels = None
depends_on = None

BATCH = 1000
PREFIXED = ("gate", "condition", "interrupted", "review")
KINDS = ("step", *PREFIXED)

request = sa.table("hitl_request", sa.column("id"), sa.column("step_id"), sa.column("hold_kind"), sa.column("hold_ref"))


def _hold(step_id: str) -> tuple[str, str]:
    for kind in PREFIXED:
        if step_id.startswith(f"{kind}:"):
            return kind, step_id.removeprefix(f"{kind}:")
    return "step", step_id  # a task's own step (a workflow step index, `chat:<event id>`)


def _step_id(kind: str, ref: str | None) -> str:
    return ref or "" if kind == "step" else f"{kind}:{ref or ''}"


def _rewrite(columns: tuple[Any, ...], change: Callable[[Any], dict[str, Any]]) -> None:
    bind = op.get_bind()
    last_id = None
    while True:
        page = sa.select(request.c.id, *columns).where(columns[0].is_not(None)).order_by(request.c.id).limit(BATCH)
        if last_id is not None:
            page = page.where(request.c.id > last_id)
        rows = bind.execute(page).all()
        if not rows:
            break
        for row in rows:
            bind.execute(request.update().where(request.c.id == row.id).values(**change(row)))
        last_id = rows[-1].id


def upgrade() -> None:
    with op.batch_alter_table("hitl_request") as batch:
        batch.add_column(sa.Column("hold_kind", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("hold_ref", sa.String(length=200), nullable=True))
    _rewrite(
        (request.c.step_id,),
        lambda row: dict(zip(("hold_kind", "hold_ref"), _hold(row.step_id), strict=True)),
    )
    allowed = ", ".join(f"'{kind}'" for kind in KINDS)
    with op.batch_alter_table("hitl_request") as batch:
        batch.create_check_constraint(op.f("ck_hitl_request_hold_kind_allowed"), f"hold_kind IN ({allowed})")
        batch.drop_column("step_id")


def downgrade() -> None:
    with op.batch_alter_table("hitl_request") as batch:
        batch.add_column(sa.Column("step_id", sa.String(length=200), nullable=True))
    _rewrite((request.c.hold_kind, request.c.hold_ref), lambda row: {"step_id": _step_id(row.hold_kind, row.hold_ref)})
    with op.batch_alter_table("hitl_request") as batch:
        batch.drop_constraint(op.f("ck_hitl_request_hold_kind_allowed"), type_="check")
        batch.drop_column("hold_ref")
        batch.drop_column("hold_kind")
