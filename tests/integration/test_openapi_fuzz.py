"""Schemathesis over the OpenAPI spec: generated requests (valid and invalid) get documented answers,
never a server error.

Each operation is one test; schemathesis's own pytest loader (``from_fixture``) does not run under
pytest 9, so the operation's Hypothesis strategy is driven directly.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from serve.api import create_app
from serve.triage.settings import Settings

ADMIN_PATHS = ("/api/users", "/api/users/{user_id}", "/api/tokens", "/api/tokens/{token_id}")
# Revoking tokens and deactivating users would lock the fuzzer out of its own credentials half-way;
# both are covered by explicit tests in test_api_auth.py.
SELF_LOCKING = {("DELETE", "/api/tokens/{token_id}"), ("PATCH", "/api/users/{user_id}")}
# The spec does not depend on the database: an app that is never started lists the operations.
OPERATIONS = sorted(
    (method.upper(), path)
    for path, item in create_app(Settings(database_url="sqlite://")).openapi()["paths"].items()
    for method in item
)
# An uploaded file that fits the schema (any bytes) is rarely a scored batch: 422 is the right answer.
CONTENT_CHECKED = {("POST", "/api/batches")}
FUZZ_SETTINGS = settings(
    max_examples=3 if os.environ.get("MISDECLARE_TEST_FAST") else 10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
@pytest.mark.parametrize(
    ("method", "path"),
    [op for op in OPERATIONS if op not in SELF_LOCKING],
    ids=[f"{m} {p}" for m, p in OPERATIONS if (m, p) not in SELF_LOCKING],
)
def test_api_answers_generated_requests_without_server_error(client, auth, method, path, mode):
    operation = schemathesis.openapi.from_asgi("/openapi.json", client.app)[path][method]
    headers = auth("admin" if path in ADMIN_PATHS else "sup")
    excluded = [schemathesis.checks.positive_data_acceptance] if (method, path) in CONTENT_CHECKED else []

    @FUZZ_SETTINGS
    @given(operation.as_strategy(generation_mode=mode))
    def check(case):
        case.call_and_validate(headers=headers, excluded_checks=excluded)

    check()
