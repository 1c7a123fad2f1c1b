"""API tokens: issue (the secret is returned once, only its SHA-256 is kept), list, revoke, check."""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Awaitable, Callable, Sequence
from uuid import UUID

from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import func, select, update

from app.core.exceptions import ConflictError, InvalidInputError, NotFoundError
from app.core.security import Principal, Role, hash_token
from app.db.engine import reading_only
from app.db.repository import Repository
from app.events.services import EventService
from app.projects.models import Project
from app.tokens.models import ApiToken

TOKEN_PREFIX = "bat_"
BOOTSTRAP_ADMIN_NAME = "admin"
# last_used_at is a hint for people, not an audit record: refresh it at most this often.
LAST_USED_RESOLUTION = datetime.timedelta(minutes=5)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def to_principal(row: ApiToken) -> Principal:
    project_ids = frozenset(UUID(value) for value in row.project_ids) if row.project_ids is not None else None
    return Principal(
        token_id=row.id, name=row.name, role=Role(row.role), project_ids=project_ids, expires_at=row.expires_at
    )


class TokenService(SQLAlchemyAsyncRepositoryService[ApiToken]):
    class Repo(Repository[ApiToken]):
        model_type = ApiToken

    repository_type = Repo

    @property
    def events(self) -> EventService:
        return EventService.of(self.repository.session)

    async def issue(
        self,
        name: str,
        role: Role,
        project_ids: Sequence[UUID] | None = None,
        *,
        actor: str | None = None,
        expires_in: datetime.timedelta | None = None,
    ) -> tuple[ApiToken, str]:
        """Create a token (`expires_in`: it expires that long from now; None: never); returns the row
        and the secret, which is never stored or shown again."""
        session = self.repository.session
        if await self.get_one_or_none(ApiToken.name == name) is not None:
            raise ConflictError(f"A token named '{name}' already exists; pick another name or revoke it first.")
        scope: list[str] | None = None
        if project_ids is not None:
            wanted = set(project_ids)
            found = set(await session.scalars(select(Project.id).where(Project.id.in_(wanted))))
            if missing := sorted(str(project_id) for project_id in wanted - found):
                raise InvalidInputError(
                    f"project_ids: no such project: {', '.join(missing)}", extra={"project_ids": missing}
                )
            scope = sorted(str(project_id) for project_id in wanted)
        secret = new_token()
        expires_at = datetime.datetime.now(datetime.UTC) + expires_in if expires_in is not None else None
        token = await self.create(
            {
                "name": name,
                "role": role.value,
                "token_hash": hash_token(secret),
                "project_ids": scope,
                "expires_at": expires_at,
            }
        )
        await self.events.record(
            "token_created",
            project_id=None,
            actor=actor,
            data={
                "token_id": str(token.id),
                "name": name,
                "role": role.value,
                "project_ids": scope,
                "expires_at": expires_at.isoformat() if expires_at is not None else None,
            },
        )
        await session.commit()
        return token, secret

    async def list_tokens(self) -> list[ApiToken]:
        return list(await self.repository.session.scalars(select(ApiToken).order_by(ApiToken.id)))

    async def revoke(
        self,
        *,
        name: str | None = None,
        token_id: UUID | None = None,
        actor: str | None = None,
        announce: Callable[[], Awaitable[None]] | None = None,
    ) -> ApiToken:
        """Revoke a token. `announce` (`RevocationNotice.announce`) tells every api process's token
        cache, before the commit (if it fails, nothing is revoked) and again after it."""
        condition = ApiToken.name == name if name is not None else ApiToken.id == token_id
        token = await self.get_one_or_none(condition)
        if token is None:
            raise NotFoundError(f"Token {name or token_id} does not exist.")
        if not token.revoked:
            token.revoked = True
            await self.repository.update(token)
            await self.events.record(
                "token_revoked", project_id=None, actor=actor, data={"token_id": str(token.id), "name": token.name}
            )
            if announce is not None:
                await announce()
            await self.repository.session.commit()
            if announce is not None:
                await announce()
        return token

    async def authenticate(self, secret: str) -> Principal | None:
        """The principal of a valid token (not revoked, not expired); None for anything else."""
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
            return None
        session = self.repository.session
        row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(secret)))
        if row is None or row.revoked:
            return None
        principal = to_principal(row)
        if principal.expired():
            return None
        now = datetime.datetime.now(datetime.UTC)
        if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
            # A write of its own, also within a GET (whose transactions only read, `reading_only`).
            await session.rollback()
            with reading_only(False):
                touched = update(ApiToken).where(ApiToken.id == principal.token_id).values(last_used_at=now)
                await session.execute(touched)
                await session.commit()
        return principal

    async def is_active(self, token_id: UUID) -> bool:
        """Whether the token exists, is not revoked and has not expired: a stream's check after it
        began (one row by id)."""
        row = (
            await self.repository.session.execute(
                select(ApiToken.revoked, ApiToken.expires_at).where(ApiToken.id == token_id)
            )
        ).first()
        if row is None or row.revoked:
            return False
        return row.expires_at is None or row.expires_at > datetime.datetime.now(datetime.UTC)

    async def bootstrap_admin(self) -> str | None:
        """On a database without any token, make the first admin token and return its secret."""
        if await self.repository.session.scalar(select(func.count()).select_from(ApiToken)):
            return None
        _, secret = await self.issue(BOOTSTRAP_ADMIN_NAME, Role.ADMIN, actor="bootstrap")
        return secret
