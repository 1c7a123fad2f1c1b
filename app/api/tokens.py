from __future__ import annotations

import datetime
from typing import Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from app.api.dependencies import SettingsDependency, service_provider
from app.core.schema import Page
from app.core.security import Principal, Role, needs
from app.tokens.cache import RevocationNotice
from app.tokens.schemas import Token, TokenCreate, TokenCreated
from app.tokens.services import TokenService


class TokenController(Controller):
    """Token management: admin only. The secret is in the create answer and nowhere else."""

    path = "/api/v1/tokens"
    tags = ["tokens"]
    opt = needs(Role.ADMIN)
    dependencies = {"tokens_service": service_provider(TokenService)}

    @post("/", operation_id="CreateToken", status_code=201)
    async def create_token(
        self,
        request: Request[Principal, Any, Any],
        tokens_service: NamedDependency[TokenService],
        data: JSONBody[TokenCreate],
    ) -> TokenCreated:
        expires_in = datetime.timedelta(seconds=data.expires_in_seconds) if data.expires_in_seconds else None
        token, secret = await tokens_service.issue(
            data.name, data.role, data.project_ids, actor=request.user.name, expires_in=expires_in
        )
        return msgspec.structs.replace(tokens_service.to_schema(token, schema_type=TokenCreated), token=secret)

    @get("/", operation_id="ListTokens")
    async def list_tokens(self, tokens_service: NamedDependency[TokenService]) -> Page[Token]:
        tokens = await tokens_service.list_tokens()
        return Page(items=[tokens_service.to_schema(token, schema_type=Token) for token in tokens], next_cursor=None)

    @delete("/{token_id:uuid}", operation_id="RevokeToken", status_code=200)
    async def revoke_token(
        self,
        app_settings: SettingsDependency,
        request: Request[Principal, Any, Any],
        tokens_service: NamedDependency[TokenService],
        token_id: FromPath[UUID],
    ) -> Token:
        notice = RevocationNotice(app_settings)
        token = await tokens_service.revoke(token_id=token_id, actor=request.user.name, announce=notice.announce)
        return tokens_service.to_schema(token, schema_type=Token)
