"""What Litestar's generated OpenAPI document leaves out, added once, when the document is first served.

- The error answers: every protected operation can answer 401, 403, 404, 409, 413, 422, 429 and
  503 with the error body (Litestar documents only 400); `/health/ready` answers 503 with its
  own body.
- Request bodies refuse unknown fields (`additionalProperties: false`), and bounds of 0 (Litestar
  drops a `minimum` of zero): both are taken from msgspec's own schema of each input struct.

A client generated from the document, or a fuzzer run against it, then sees what the server does.

The document is built on its first request, not with the app: building it takes about half of
`create_app` (0.6 s of 1.2 s), which every start-up of `botarmy serve` and `botarmy run` would pay.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar, Request, Router
from litestar._openapi.plugin import OpenAPIPlugin  # the plugin that holds the served document

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
    "401": "No token, or an unknown, revoked or expired one",
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


def docs_router(path: str) -> Router:
    """The router Litestar puts the document's routes on: it completes the document before serving it."""

    def complete_first(request: Request[Any, Any, Any]) -> None:
        openapi_document(request.app)

    return Router(path, route_handlers=[], include_in_schema=False, before_request=complete_first)


def openapi_document(app: Litestar) -> dict[str, Any]:
    """The app's OpenAPI document, completed (the first call builds it: the others are free)."""
    document = app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    components = document.setdefault("components", {}).setdefault("schemas", {})
    if ERROR_SCHEMA_NAME not in components:
        _complete(app, document)
    return document


def _complete(app: Litestar, document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
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
