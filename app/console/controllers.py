"""The console's pages. They are ordinary authenticated routes (the token comes from the console's
HTTP-only cookie, `app.core.security.token_of`), rendered from the same services the API uses; a
browser without a valid cookie is sent to the login page. Changes go through the JSON API, from
`static/console.js`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit
from uuid import UUID

from litestar import Controller, Request, Response, Router, get, post
from litestar.datastructures import Cookie, State
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotAuthorizedException
from litestar.params import Body, FromPath
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from msgspec import Struct
from sqlalchemy.ext.asyncio import AsyncSession

from app.chat.services import DEFAULT_WORKFLOW
from app.config import Settings
from app.console import views
from app.core.exceptions import AppError
from app.core.runtime import Runtime
from app.core.security import CONSOLE_COOKIE, CONSOLE_HEADER, PUBLIC, Principal, Role, needs
from app.tokens.services import TokenService

HERE = Path(__file__).parent
COOKIE_DAYS = 7
# The console's pages load only their own scripts and styles, and talk only to this server.
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# `same-origin`, not the API's `no-referrer`: with that, a form's POST says `Origin: null` (see `login`).
PAGE_HEADERS = {"Content-Security-Policy": CONSOLE_CSP, "Cache-Control": "no-store", "Referrer-Policy": "same-origin"}


def console_templates() -> TemplateConfig[JinjaTemplateEngine]:
    """The app's template config (`create_app(template_config=...)`)."""
    return TemplateConfig(directory=HERE / "templates", engine=JinjaTemplateEngine)


def page(name: str, status_code: int = 200, **context: Any) -> Template:
    context = {"csrf_header": CONSOLE_HEADER, "principal": None, **context}
    return Template(template_name=name, context=context, headers=PAGE_HEADERS, status_code=status_code)


def wants_html(request: Request[Any, Any, Any]) -> bool:
    return "text/html" in request.headers.get("accept", "")


def unauthorized(request: Request[Any, Any, Any], exc: NotAuthorizedException) -> Response[Any]:
    """A browser goes to the login page; any other client gets the API's 401."""
    if wants_html(request):
        return Redirect("/login")
    return Response({"status_code": 401, "detail": exc.detail}, status_code=401, headers=exc.headers)


def app_error(request: Request[Any, Any, Any], exc: AppError) -> Response[Any]:
    if wants_html(request):
        return page("error.html", exc.status_code, title=f"Error {exc.status_code}", detail=exc.detail)
    return Response({"status_code": exc.status_code, "detail": exc.detail}, status_code=exc.status_code)


def console_cookie(request: Request[Any, Any, Any], value: str, *, max_age: int) -> Cookie:
    """The token's cookie: out of reach of scripts, never sent cross-site, over https only when served so."""
    secure = request.url.scheme == "https"
    return Cookie(
        key=CONSOLE_COOKIE, value=value, max_age=max_age, path="/", httponly=True, samesite="strict", secure=secure
    )


class LoginForm(Struct):
    token: str = ""


class ConsoleAuthController(Controller):
    """Login and logout: open routes (they set and clear the cookie that the others need)."""

    include_in_schema = False
    opt = PUBLIC

    @get("/login")
    async def login_page(self) -> Template:
        return page("login.html", title="Sign in")

    @post("/login", status_code=303)
    async def login(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Response[Any]:
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host"):
            return page("login.html", 403, title="Sign in", error="Sign in from this server's own page.")
        secret = data.token.strip()
        runtime: Runtime = request.app.state.runtime
        async with runtime.session() as session:
            principal = await TokenService(session=session).authenticate(secret) if secret else None
        if principal is None:
            return page("login.html", 401, title="Sign in", error="The token is unknown, revoked or expired.")
        cookie = console_cookie(request, secret, max_age=COOKIE_DAYS * 86400)
        return Redirect("/", status_code=303, cookies=[cookie])

    @post("/logout", status_code=303)
    async def logout(self, request: Request[Any, Any, Any]) -> Response[Any]:
        return Redirect("/login", status_code=303, cookies=[console_cookie(request, "", max_age=0)])


class ConsoleController(Controller):
    """The pages; each needs a token that may read (the viewer role)."""

    include_in_schema = False
    opt = needs(Role.VIEWER)
    exception_handlers = {NotAuthorizedException: unauthorized, AppError: app_error}

    @get("/")
    async def projects_page(
        self, state: State, principal: NamedDependency[Principal], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        settings: Settings = state.settings
        core_workflows = sorted(await views.workflow_ids(settings))
        return page(
            "projects.html",
            title="Projects",
            principal=principal,
            projects=await views.projects(db_session, principal),
            workflows=core_workflows,
            default_workflow=DEFAULT_WORKFLOW,
            may_create=principal.has_role(Role.PRODUCT_OWNER) and not principal.is_scoped,
        )

    @get("/projects/{project_id:uuid}")
    async def project_page(
        self,
        state: State,
        principal: NamedDependency[Principal],
        db_session: NamedDependency[AsyncSession],
        project_id: FromPath[UUID],
    ) -> Template:
        panels = await views.panels(db_session, state.settings, principal, project_id)
        return page(
            "project.html",
            title=panels.project.name,
            principal=principal,
            panels=panels,
            chat=await views.chat(db_session, state.settings, project_id),
            may_act=principal.has_role(Role.PRODUCT_OWNER),
        )

    @get("/projects/{project_id:uuid}/panels")
    async def project_panels(
        self,
        state: State,
        principal: NamedDependency[Principal],
        db_session: NamedDependency[AsyncSession],
        project_id: FromPath[UUID],
    ) -> Template:
        """The parts of the project page that change as it runs, for the page's script to swap in."""
        panels = await views.panels(db_session, state.settings, principal, project_id)
        return page("panels.html", panels=panels, may_act=principal.has_role(Role.PRODUCT_OWNER))

    @get("/hitl/{request_id:uuid}")
    async def hitl_page(
        self,
        principal: NamedDependency[Principal],
        db_session: NamedDependency[AsyncSession],
        request_id: FromPath[UUID],
    ) -> Template:
        hitl, artifacts, task = await views.hitl_context(db_session, principal, request_id)
        project = await views.visible_project_row(db_session, principal, hitl.project_id)
        return page(
            "hitl.html",
            title="Review",
            principal=principal,
            project=project,
            hitl=hitl,
            artifacts=[
                (artifact, views.text_of(artifact.content)[0], await views.readable(artifact, project.name, under=2))
                for artifact in artifacts
            ],
            task=task,
            reasoning={
                key: (task.output or {})[key]
                for key in ("summary", "confidence", "open_questions")
                if task is not None and key in (task.output or {})
            },
            may_act=principal.has_role(Role.PRODUCT_OWNER),
        )

    @get("/artifacts/{artifact_id:uuid}")
    async def artifact_page(
        self,
        principal: NamedDependency[Principal],
        db_session: NamedDependency[AsyncSession],
        artifact_id: FromPath[UUID],
    ) -> Template:
        artifact = await views.artifact(db_session, principal, artifact_id)
        project = await views.visible_project_row(db_session, principal, artifact.project_id)
        return page(
            "artifact.html",
            title=artifact.title,
            principal=principal,
            project=project,
            artifact=artifact,
            document=await views.readable(artifact, project.name, under=1),
        )

    @get("/artifacts/{artifact_id:uuid}/download")
    async def artifact_download(
        self,
        principal: NamedDependency[Principal],
        db_session: NamedDependency[AsyncSession],
        artifact_id: FromPath[UUID],
    ) -> Response[bytes]:
        artifact = await views.artifact(db_session, principal, artifact_id)
        text, extension = views.text_of(artifact.content)
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", artifact.title).strip("-")[:80] or "artifact"
        media_type = "text/markdown" if extension == "md" else "application/json"
        return Response(
            text.encode(),
            media_type=f"{media_type}; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}-v{artifact.version}.{extension}"'},
        )


console_router = Router(
    path="/",
    route_handlers=[
        ConsoleAuthController,
        ConsoleController,
        create_static_files_router(
            path="/static", directories=[HERE / "static"], opt=PUBLIC, include_in_schema=False, name="console_static"
        ),
    ],
)
