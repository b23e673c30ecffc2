"""Administration end to end: an admin creates a project and a key, the key is used through the
official SDK, revoked, and refused; a non-admin key gets 403 on every admin route; deleting a
project removes its chunks from both engines."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from llama_cloud import LlamaCloud

from services.launcher import Stack
from tests.e2e.corpus import ingest_corpus
from tests.e2e.stack import engine_counts, running_stack

pytestmark = pytest.mark.e2e

ADMIN_KEY = "qk-admin-e2e"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("admin"), ADMIN_KEY) as s:
        yield s


def call(stack: Stack, method: str, path: str, key: str = ADMIN_KEY, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{stack.base_url}{path}", headers={"authorization": f"Bearer {key}"},
                         timeout=30, **kwargs)


def test_a_project_and_its_key_from_creation_to_revocation_and_deletion(stack: Stack) -> None:
    created = call(stack, "POST", "/api/v1/admin/projects", json={"name": "team-a"})
    assert created.status_code == 201, created.text
    project = created.json()
    assert call(stack, "POST", "/api/v1/admin/projects", json={"name": "team-a"}).status_code == 409
    made = call(stack, "POST", "/api/v1/admin/keys",
                json={"project_id": project["id"], "name": "ci", "expires_in_days": 30})
    assert made.status_code == 201, made.text
    key = made.json()
    assert key["api_key"] and key["project_id"] == project["id"] and key["is_admin"] is False
    assert key["expires_at"] and key["revoked_at"] is None

    # The new key works through the official SDK, in its own project only.
    client = LlamaCloud(api_key=key["api_key"], base_url=stack.base_url)
    index = ingest_corpus(client, name="team-a")
    hits = client.retrieval.retrieve(index_id=index.id, query="volcano eruption ash").results
    assert hits
    assert call(stack, "GET", f"/api/v1/indexes/{index.id}").status_code == 404  # not the admin's project
    assert all(c > 0 for c in engine_counts(stack, index.id))

    listed = call(stack, "GET", "/api/v1/admin/keys", params={"project_id": project["id"]}).json()
    assert [k["id"] for k in listed] == [key["id"]]
    assert listed[0]["last_used_at"] is not None and "api_key" not in listed[0]

    # A non-admin key is refused on every admin route.
    for method, path in (("GET", "/api/v1/admin/projects"), ("POST", "/api/v1/admin/keys"),
                         ("GET", "/api/v1/admin/keys"), ("DELETE", f"/api/v1/admin/keys/{key['id']}"),
                         ("DELETE", f"/api/v1/admin/projects/{project['id']}")):
        assert call(stack, method, path, key=key["api_key"], json={} if method == "POST" else None).status_code == 403

    # Revoked: refused at once by this gateway.
    revoked = call(stack, "DELETE", f"/api/v1/admin/keys/{key['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    refused = call(stack, "GET", f"/api/v1/indexes/{index.id}", key=key["api_key"])
    assert refused.status_code == 401 and "revoked" in refused.text

    renamed = call(stack, "PATCH", f"/api/v1/admin/projects/{project['id']}", json={"name": "team-b"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "team-b"

    # Deleting the project removes its chunks from both engines.
    deleted = call(stack, "DELETE", f"/api/v1/admin/projects/{project['id']}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted_index_ids"] == [index.id]
    assert engine_counts(stack, index.id) == (0, 0)
    names = [p["name"] for p in call(stack, "GET", "/api/v1/admin/projects").json()]
    assert "team-b" not in names and "Default" in names
    default = next(p for p in call(stack, "GET", "/api/v1/admin/projects").json() if p["is_default"])
    assert call(stack, "DELETE", f"/api/v1/admin/projects/{default['id']}").status_code == 409


def test_bad_admin_input_is_a_4xx_naming_the_field(stack: Stack) -> None:
    bad = call(stack, "POST", "/api/v1/admin/keys", json={"expires_in_days": -1})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "expires_in_days"]
    assert call(stack, "POST", "/api/v1/admin/projects", json={"name": ""}).status_code == 422
    assert call(stack, "POST", "/api/v1/admin/keys", json={"project_id": "no-such-project"}).status_code == 404
    assert call(stack, "DELETE", "/api/v1/admin/keys/no-such-key").status_code == 404
    assert call(stack, "GET", "/api/v1/admin/projects", key="qk-wrong").status_code == 401
