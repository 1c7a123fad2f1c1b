"""The execution's own state leaves the user's variables: `workflow_execution.control`.

Until now an execution kept its gates, gate redos, requests to ask again, the status it was
paused from and the emergency-stop flag as reserved keys (`_gates`, `_redos`, `_reask`,
`_paused_from`, `_stopped`) among its variables. They move to `control` (a JSON object read as
`app.workflows.state.ExecutionControl`); the variables keep only the user's flags. The downgrade
puts them back.

Revision ID: 6d1f8a2c4b39
Revises: 5b7e3c9a1d24
Create Date: 2026-12-07 00:40:00+00:00
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from advanced_alchemy.types import JsonB
from alembic import op

revision = "6d1f8a2c4b39"
down_revision = "5b7e3c9a1d24"
branch_labels = None
depends_on = None

BATCH = 1000
# Reserved key in `variables` -> field of `control`.
RESERVED = {
    "_gates": "gates",
    "_redos": "redos",
    "_reask": "reask",
    "_paused_from": "paused_from",
    "_stopped": "stopped",
}

execution = sa.table("workflow_execution", sa.column("id"), sa.column("variables", JsonB), sa.column("control", JsonB))


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value  # SQLite may return JSON text


def _rewrite(change: Any) -> None:
    """Page through the executions by id; `change(row)` returns the new values, or None to leave the row."""
    bind = op.get_bind()
    last_id = None
    while True:
        page = sa.select(execution.c.id, execution.c.variables, execution.c.control).order_by(execution.c.id)
        if last_id is not None:
            page = page.where(execution.c.id > last_id)
        rows = bind.execute(page.limit(BATCH)).all()
        if not rows:
            break
        for row in rows:
            values = change(_json(row.variables) or {}, _json(row.control) or {})
            if values is not None:
                bind.execute(execution.update().where(execution.c.id == row.id).values(**values))
        last_id = rows[-1].id


def _move_out(variables: dict[str, Any], control: dict[str, Any]) -> dict[str, Any] | None:
    if not any(key in variables for key in RESERVED):
        return None
    moved = {field: variables[key] for key, field in RESERVED.items() if key in variables}
    kept = {key: value for key, value in variables.items() if key not in RESERVED}
    return {"variables": kept, "control": {**control, **moved}}


def _move_back(variables: dict[str, Any], control: dict[str, Any]) -> dict[str, Any] | None:
    if not control:
        return None
    back = {key: control[field] for key, field in RESERVED.items() if field in control}
    return {"variables": {**variables, **back}}


def upgrade() -> None:
    op.add_column("workflow_execution", sa.Column("control", JsonB, server_default="{}", nullable=False))
    _rewrite(_move_out)


def downgrade() -> None:
    _rewrite(_move_back)
    with op.batch_alter_table("workflow_execution") as batch:
        batch.drop_column("control")
