"""The servers the tests use (PostgreSQL, Redis, OpenSearch): where each one is, and what a test
does when it cannot reach one.

``scripts/test-servers`` installs, starts and waits for all three, and the URLs below are the
ones it sets up; each can be pointed elsewhere with its ``QUARRY_TEST_*`` variable. With
``CI=true`` a test whose server cannot be reached **fails** (CI starts every server, so an
unreachable one means a broken run, never a reason to pass); elsewhere it is skipped with the
reason, which pytest prints in the summary.
"""

from __future__ import annotations

import os
from typing import NoReturn

import httpx
import pytest

POSTGRES_URL = os.environ.get(
    "QUARRY_TEST_POSTGRES_URL", "postgresql://quarry_test:quarry_test@127.0.0.1:5432/quarry_test"
)
REDIS_URL = os.environ.get("QUARRY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
#: Unset: the tests start their own OpenSearch node (``tests/opensearch``) when Java is installed.
OPENSEARCH_URL = os.environ.get("QUARRY_TEST_OPENSEARCH_URL") or None
#: Basic auth and TLS verification for a secured test cluster (the tests' own node has neither).
OPENSEARCH_USERNAME = os.environ.get("QUARRY_TEST_OPENSEARCH_USERNAME") or None
OPENSEARCH_PASSWORD = os.environ.get("QUARRY_TEST_OPENSEARCH_PASSWORD") or None
OPENSEARCH_VERIFY_CERTS = os.environ.get("QUARRY_TEST_OPENSEARCH_VERIFY_CERTS", "1") != "0"


def in_ci() -> bool:
    """Whether this run is CI's (``CI`` set to a true value, as every CI system does)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def opensearch_reachable(url: str) -> bool:
    """Whether the cluster at ``url`` (the first of a comma-separated list) answers."""
    try:
        auth = (OPENSEARCH_USERNAME, OPENSEARCH_PASSWORD or "") if OPENSEARCH_USERNAME else None
        response = httpx.get(url.split(",")[0], auth=auth, verify=OPENSEARCH_VERIFY_CERTS, timeout=3)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def unavailable(reason: str) -> NoReturn:
    """Fail under CI, skip elsewhere: a test server is not reachable."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: every test server must be up; scripts/test-servers starts them)",
                    pytrace=False)
    pytest.skip(reason)
