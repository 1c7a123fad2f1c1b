"""What Litestar's generated OpenAPI document leaves out, added when the document is first served.

- The error answers: every protected operation can answer 401, 403, 404, 409, 413, 422, 429 and
  503 with the error body (Litestar documents only 400); `/health/ready` answers 503 with its
  own body.
- Request bodies refuse unknown fields (`additionalProperties: false`), and bounds of 0 (Litestar
  drops a `minimum` of zero): both are taken from msgspec's own schema of each input struct.

A client generated from the document, or a fuzzer run against it, then sees what the server does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Litestar, Request
from litestar._openapi.plugin import OpenAPIPlugin  # the plugin that holds the served document
from litestar.openapi import OpenAPIConfig

from app.core.schema import InputStruct

ERROR_SCHEMA_NAME = "Error"
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status_code", "detail"],
    "properties": {
        "status_code": {"type": "integer"},
        "detail": {"type": "string"},
        "extra": {},
    },
}
ERROR_STATUSES = {
    "400": "Bad input: which field, and why",
    "401": "No token, or an unknown or revoked one",
    "403": "The token's role does not allow this",
    "404": "No such resource (or not visible to this token)",
    "409": "Conflicts with the current state",
    "413": "Request body too large",
    "422": "Well-formed, but refers to something that does not exist",
    "429": "Rate limit exceeded",
    "503": "A backing service (database, queue) is unavailable",
}
PUBLIC_PATHS = {"/health", "/health/ready"}
# A handler whose 200 is a file download names its media types in its opt under this key.
DOWNLOAD_KEY = "download_media_types"
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def _input_structs() -> dict[str, type[InputStruct]]:
    found: dict[str, type[InputStruct]] = {}
    pending = list(InputStruct.__subclasses__())
    while pending:
        struct = pending.pop()
        found[struct.__name__] = struct
        pending.extend(struct.__subclasses__())
    return found


def _merge_bounds(target: dict[str, Any], source: dict[str, Any]) -> None:
    for key in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "minLength", "maxLength", "pattern"):
        if key in source and key not in target:
            target[key] = source[key]
    if isinstance(target.get("items"), dict) and isinstance(source.get("items"), dict):
        _merge_bounds(target["items"], source["items"])
    for variant_key in ("anyOf", "oneOf"):
        for target_variant in target.get(variant_key, []):
            for source_variant in [*source.get("anyOf", []), source]:
                if isinstance(target_variant, dict) and target_variant.get("type") == source_variant.get("type"):
                    _merge_bounds(target_variant, source_variant)


def openapi_config(title: str, version: str, path: str) -> OpenAPIConfig:
    """Litestar's document, completed by each of its pages (JSON, YAML, Redoc, ...) as it is served.

    Not when the app is built: generating the document takes as long as building the rest of the
    app (0.8 s of 1.3 s), which every api start, every `botarmy run` and every in-process test
    client paid, though only a reader of `/schema` needs it. Litestar builds the document on the
    first request and keeps the dictionary; the pages complete that same dictionary, once.
    """
    config = OpenAPIConfig(title=title, version=version, path=path)
    for page in config.render_plugins:
        page.render = _completing(page.render)  # type: ignore[method-assign,assignment]
    return config


def _completing(
    render: Callable[[Request[Any, Any, Any], dict[str, Any]], bytes],
) -> Callable[[Request[Any, Any, Any], dict[str, Any]], bytes]:
    def render_completed(request: Request[Any, Any, Any], document: dict[str, Any]) -> bytes:
        complete_openapi_document(request.app, document)
        return render(request, document)

    return render_completed


def served_openapi_document(app: Litestar) -> dict[str, Any]:
    """The document as `/schema/openapi.json` serves it."""
    document = app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    complete_openapi_document(app, document)
    return document


def complete_openapi_document(app: Litestar, document: dict[str, Any]) -> None:
    """Add what Litestar leaves out to its document, in place; a completed document is left as it is."""
    components = document.setdefault("components", {}).setdefault("schemas", {})
    if ERROR_SCHEMA_NAME in components:
        return
    components[ERROR_SCHEMA_NAME] = ERROR_SCHEMA
    error_ref = {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}

    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method not in HTTP_METHODS or path.startswith("/schema"):
                continue
            responses = operation.setdefault("responses", {})
            if path == "/health/ready":
                responses.setdefault("503", {**responses["200"], "description": "Not ready: a component is failing"})
                continue
            if path in PUBLIC_PATHS:
                continue
            for status, description in ERROR_STATUSES.items():
                responses.setdefault(
                    status, {"description": description, "content": {"application/json": {"schema": error_ref}}}
                )

    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            media_types = handler.opt.get(DOWNLOAD_KEY)
            if not media_types:
                continue
            for method in handler.http_methods:
                operation = document["paths"].get(route.path_format, {}).get(method.lower())
                if operation is not None:
                    binary = {"schema": {"type": "string", "format": "binary"}}
                    operation["responses"]["200"]["content"] = {media_type: binary for media_type in media_types}

    for name, struct in _input_structs().items():
        generated = components.get(name)
        if not isinstance(generated, dict):
            continue
        reference = msgspec.json.schema(struct)
        own = reference.get("$defs", {}).get(name, reference)
        generated["additionalProperties"] = False
        for field, field_schema in own.get("properties", {}).items():
            target = generated.get("properties", {}).get(field)
            if isinstance(target, dict):
                _merge_bounds(target, field_schema)
