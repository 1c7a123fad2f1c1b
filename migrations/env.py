"""Alembic environment, driven by advanced-alchemy's AlembicCommands (see app/db/engine.py)."""

import asyncio
from typing import TYPE_CHECKING, cast

from alembic import context
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.compare import compare_type, include_object_for
from app.models import metadata

if TYPE_CHECKING:
    from advanced_alchemy.alembic.commands import AlembicCommandConfig
    from sqlalchemy.engine import Connection

config = cast("AlembicCommandConfig", context.config)


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=metadata,
        compare_type=compare_type if config.compare_type else False,
        version_table=config.version_table_name,
        version_table_pk=config.version_table_pk,
        user_module_prefix=config.user_module_prefix,
        render_as_batch=config.render_as_batch,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=config.db_url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: "Connection") -> None:
    _configure(connection=connection, include_object=include_object_for(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    # A fresh engine of our own: the application's engine belongs to another event loop.
    engine = create_async_engine(config.db_url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
