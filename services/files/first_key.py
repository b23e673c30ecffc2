"""``python -m services.files.first_key``: the "Default" project and an API key, made through the
files service of this pod with this pod's own service credential (token and, with mTLS, its
certificate), for ``kubectl exec`` on a new deployment. Prints the key."""

from __future__ import annotations

import asyncio

from services._proto.quarry.files.v1 import files_pb2, files_pb2_grpc
from services.common.channels import Channels
from services.files.settings import FilesSettings

DEFAULT_PROJECT = "Default"


async def create_first_key(settings: FilesSettings, api_key: str = "") -> str:
    """Ensure the default project and register ``api_key`` (a generated one when empty) for it."""
    auth = settings.service_auth
    if auth.tls and not auth.server_name:  # dialling 127.0.0.1: verify the certificate's Service name
        auth = auth.model_copy(update={"server_name": "quarry-files"})
    channels = Channels(auth)
    try:
        files = channels.stub(files_pb2_grpc.FilesStub, f"127.0.0.1:{settings.port}")
        project = await files.EnsureProject(files_pb2.EnsureProjectRequest(name=DEFAULT_PROJECT), timeout=10)
        created = await files.CreateApiKey(
            files_pb2.CreateApiKeyRequest(project_id=project.id, api_key=api_key, name="first key", is_admin=True),
            timeout=10)
        return str(created.api_key)
    finally:
        await channels.close()


def main() -> None:
    print(asyncio.run(create_first_key(FilesSettings())))


if __name__ == "__main__":
    main()
