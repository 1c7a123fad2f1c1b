"""Schemathesis against the app's own OpenAPI document: no 5xx, and no answer the document does not describe.

Every operation of the document is one test per mode (embedded: SQLite in a temporary directory and the
in-process broker; services: a PostgreSQL database and a Redis namespace of this module's own). Each runs a
bounded, derandomized number of generated requests, positive and negative, through the app in this process
(Schemathesis' ASGI transport, lifespan included), and every answer goes through Schemathesis' default checks:
no server error, status code / content type / headers / body as documented, schema-valid requests accepted,
schema-invalid ones rejected, unsupported methods refused.

The operations are read from the document at collection time, without starting anything; a separate test
checks that the document the running app serves is that same document.
"""

from __future__ import annotations

import asyncio
import copy
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir, storage_directory
from litestar import Litestar
from schemathesis import Case, HookContext
from schemathesis.python import asgi

from app.config import Settings, load_settings
from app.core.openapi import openapi_document
from app.main import create_app
from tests.conftest import (
    FAST_ENV,
    migrated_services_env,
)
from tests.helpers import issue_token

SCHEMA_PATH = "/schema/openapi.json"
MAX_EXAMPLES = 25
# Schema-valid requests may still be refused for what no schema can say: a reference to something that does not
# exist. Schemathesis expects 404 or 409 for that; this API answers 422 (a token scoped to an unknown project, a
# task whose context_ids name no artifact of its project). A schema-level refusal is a 400 and is still reported.
POSITIVE_DATA_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
# The rate limit is not under test here, and counting on this run's pace to stay under it would make it flaky.
TEST_ENV = {**FAST_ENV, "BOTARMY_RATE_LIMIT_PER_MINUTE": "1000000"}

# Hypothesis caches unicode tables and source constants on disk, some while the tests are being collected: in a
# temporary directory rather than `.hypothesis/` (removed by `hypothesis_home`, or at exit if nothing here runs).
HYPOTHESIS_HOME = tempfile.TemporaryDirectory(prefix="botarmy-hypothesis-")
PREVIOUS_HYPOTHESIS_HOME = storage_directory(intent_to_write=False).home_directory
set_hypothesis_home_dir(HYPOTHESIS_HOME.name)

# The document an app serves, built, never started: known at collection, before any fixture runs.
DOCUMENT: dict[str, Any] = openapi_document(create_app(load_settings({**TEST_ENV, "BOTARMY_DATA_DIR": "unused"})))
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"positive_data_acceptance": {"expected-statuses": POSITIVE_DATA_ACCEPTED}}}
)
# The Server-Sent Events stream never ends by design, so no single request/response check can finish on
# it; tests/integration/events/test_stream_replay.py reads it with a real client.
schema = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT), config=CONFIG).exclude(path_regex=r"/events/stream$")

# Path parameter -> the id of a resource that exists in the running app (filled in by `running_app`).
KNOWN_IDS: dict[str, str] = {}


@dataclass(frozen=True)
class RunningApp:
    app: Litestar
    client: asgi.ASGIClient
    headers: dict[str, str]


@pytest.fixture(scope="module", autouse=True)
def hypothesis_home() -> Iterator[None]:
    """Back to Hypothesis' own home once this module is done, and its temporary one removed."""
    yield
    set_hypothesis_home_dir(PREVIOUS_HYPOTHESIS_HOME)
    HYPOTHESIS_HOME.cleanup()


@pytest.fixture(scope="module", params=["embedded", "services"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def mode_env(mode: str) -> Iterator[dict[str, str]]:
    """Like `embedded_env` / `own_services_env`, once for the whole module, and removed at its end."""
    if mode == "embedded":
        with tempfile.TemporaryDirectory(prefix="botarmy-schemathesis-") as data_dir:
            yield {**TEST_ENV, "BOTARMY_DATA_DIR": data_dir}
        return
    with migrated_services_env("st", TEST_ENV) as env:
        yield env


@pytest.fixture(scope="module")
def running_app(mode_env: dict[str, str]) -> Iterator[RunningApp]:
    """The app with its lifespan running, an admin token, and one project, task and token that exist."""
    settings_: Settings = load_settings(mode_env)
    app = create_app(settings_)
    try:
        # Entering the client runs the lifespan (which migrates the SQLite file) until `shutdown_lifespans`.
        with asgi.get_client(cast("asgi.ASGIApp", app)) as client:
            headers = {"Authorization": f"Bearer {asyncio.run(issue_token(settings_, 'admin'))}"}
            running = RunningApp(app=app, client=client, headers=headers)
            KNOWN_IDS.update(seed_resources(running))
            yield running
    finally:
        KNOWN_IDS.clear()
        asgi.shutdown_lifespans()


def seed_resources(running: RunningApp) -> dict[str, str]:
    def created(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = running.client.post(path, json=body, headers=running.headers)
        assert response.status_code == 201, response.text
        answer: dict[str, Any] = response.json()
        return answer

    project = created("/api/v1/projects", {"name": "schemathesis"})
    task = created(f"/api/v1/projects/{project['id']}/tasks", {"agent_type": "coder", "instructions": "fuzzed"})
    # Not the token the requests are sent with: revoking it must not lock the run out.
    token = created("/api/v1/tokens", {"name": "schemathesis-revocable", "role": "viewer"})
    return {"project_id": project["id"], "task_id": task["task_id"], "token_id": token["id"]}


@schema.hook
def flatmap_case(context: HookContext, case: Case[Any]) -> st.SearchStrategy[Case[Any]]:
    """Half of the positive cases name a resource that exists: generated ids alone would only ever meet 404s."""
    path_parameters = case.path_parameters or {}
    known = {name: value for name, value in KNOWN_IDS.items() if name in path_parameters}
    if not known or case.meta is None or not case.meta.generation.mode.is_positive:
        return st.just(case)

    def maybe_known(use_known: bool) -> Case[Any]:
        if use_known:
            case.path_parameters = {**path_parameters, **known}
        return case

    return st.booleans().map(maybe_known)


def test_the_served_document_is_the_one_tested(running_app: RunningApp) -> None:
    response = running_app.client.get(SCHEMA_PATH)  # open: no token
    assert response.status_code == 200, response.text
    assert response.json() == json.loads(json.dumps(DOCUMENT))


@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    # Every example is a request through the whole app; and generating from JSON schemas filters a lot.
    suppress_health_check=list(HealthCheck),
)
@schema.parametrize()
def test_api_conforms_to_its_openapi_document(case: Case[Any], running_app: RunningApp) -> None:
    case.call_and_validate(app=running_app.app, session=running_app.client, headers=running_app.headers)
