"""Session-wide fixtures: the test servers of ``tests.servers``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import servers
from tests.opensearch.node import NodeError, OpenSearchNode, java_available


@pytest.fixture(scope="session")
def opensearch_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A reachable OpenSearch: ``QUARRY_TEST_OPENSEARCH_URL``, else a node this session starts
    (``tests/opensearch``, when Java and Maven are installed), else skip (fail under CI)."""
    if servers.OPENSEARCH_URL:
        if not servers.opensearch_reachable(servers.OPENSEARCH_URL):
            servers.unavailable(f"OpenSearch not reachable at {servers.OPENSEARCH_URL}")
        yield servers.OPENSEARCH_URL
        return
    if not java_available():
        servers.unavailable("QUARRY_TEST_OPENSEARCH_URL is not set and no JDK/Maven to start an OpenSearch node")
    node = OpenSearchNode(tmp_path_factory.mktemp("opensearch"))
    try:
        node.start()
    except NodeError as exc:
        servers.unavailable(f"could not start an OpenSearch node: {exc}")
    try:
        yield node.url
    finally:
        node.stop()
