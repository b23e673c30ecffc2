"""Service-to-service authentication on a real grpc.aio server (the sparse service on tantivy):
the token, its rotation, mTLS, certificate rotation on both sides, and the plaintext health port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr

from services._proto.quarry.sparse.v1 import sparse_pb2, sparse_pb2_grpc
from services.common.channels import Channels, channel
from services.common.grpc_server import RunningServer, start_server
from services.common.security import CredentialError, ServiceAuth
from services.sparse.bootstrap import bootstrap
from services.sparse.servicer import SERVICE_NAME, SparseServicer, register
from services.sparse.settings import SparseSettings
from tests.tls import Authority

Serve = Callable[..., Awaitable[RunningServer]]
COUNT = sparse_pb2.CountRequest(index_id="idx")


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    started: list[tuple[RunningServer, Any]] = []

    async def _serve(**settings: Any) -> RunningServer:
        values = {"data_dir": str(tmp_path / f"sparse{len(started)}"), "port": 0, "writer_heap_mb": 16,
                  "threads": 1, **settings}
        app = bootstrap(SparseSettings(**values))
        running = await start_server(SparseSettings(**values), register(SparseServicer(app.service)),
                                     [SERVICE_NAME], app.ready)
        started.append((running, app))
        return running

    yield _serve
    for running, app in started:
        await running.stop(0)
        await app.close()


def _write(path: str | None, data: bytes) -> None:
    """Replace a credential file's contents (what a Secret update does to the mounted file)."""
    Path(path or "").write_bytes(data)


async def _code(call: Awaitable[Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code()


async def test_a_service_without_a_credential_refuses_to_start_unless_the_opt_out_is_explicit(serve: Serve) -> None:
    with pytest.raises(CredentialError, match="QUARRY_SPARSE_SERVICE_AUTH__TOKEN"):
        await serve()
    running = await serve(service_auth=ServiceAuth(insecure=True))
    async with channel(running.address, ServiceAuth(insecure=True)) as ch:
        assert (await sparse_pb2_grpc.SparseSearchStub(ch).Count(COUNT, timeout=5)).count == 0


async def test_calls_without_the_token_are_unauthenticated_and_health_is_open(serve: Serve) -> None:
    running = await serve(service_auth=ServiceAuth(token=SecretStr("right")))
    for auth in (ServiceAuth(insecure=True), ServiceAuth(token=SecretStr("wrong"))):
        async with channel(running.address, auth) as ch:
            assert await _code(sparse_pb2_grpc.SparseSearchStub(ch).Count(COUNT, timeout=5)) == (
                grpc.StatusCode.UNAUTHENTICATED)
            health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status in (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING)
    async with grpc.aio.insecure_channel(running.address) as ch:  # a bearer of another scheme
        call = sparse_pb2_grpc.SparseSearchStub(ch).Count(COUNT, timeout=5, metadata=[("authorization", "Basic right")])
        assert await _code(call) == grpc.StatusCode.UNAUTHENTICATED
    async with channel(running.address, ServiceAuth(token=SecretStr("right"))) as ch:
        assert (await sparse_pb2_grpc.SparseSearchStub(ch).Count(COUNT, timeout=5)).count == 0


async def test_a_rotated_token_file_is_picked_up_and_the_previous_token_kept_for_the_rollout(
    serve: Serve, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    server_auth = ServiceAuth(token_file=str(token_file), previous_tokens=[SecretStr("zeroth")], reload_seconds=0.05)
    running = await serve(service_auth=server_auth)

    async def count(token: str) -> grpc.StatusCode:
        async with channel(running.address, ServiceAuth(token=SecretStr(token))) as ch:
            try:
                await sparse_pb2_grpc.SparseSearchStub(ch).Count(COUNT, timeout=5)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

    assert [await count(t) for t in ("first", "zeroth", "second")] == [
        grpc.StatusCode.OK, grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED]
    token_file.write_text("second\n")
    await asyncio.sleep(0.1)
    assert [await count(t) for t in ("second", "first")] == [grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED]


# -- mTLS -------------------------------------------------------------------------------------------


async def test_mtls_accepts_only_clients_with_a_certificate_of_the_ca(serve: Serve, tmp_path: Path) -> None:
    ca, other = Authority.create(), Authority.create("someone-else")
    server_auth = ServiceAuth(**ca.write(tmp_path / "server", "quarry-sparse"))
    running = await serve(service_auth=server_auth)
    good = ServiceAuth(**ca.write(tmp_path / "gateway", "quarry-gateway"), server_name="quarry-sparse")
    async with channel(running.address, good) as ch:
        assert (await sparse_pb2_grpc.SparseSearchStub(ch).Count(COUNT, timeout=10)).count == 0

    foreign = ServiceAuth(**other.write(tmp_path / "intruder", "quarry-gateway"), server_name="quarry-sparse")
    foreign = foreign.model_copy(update={"ca_file": good.ca_file})  # trusts the server, but is not trusted
    no_cert = grpc.ssl_channel_credentials(root_certificates=ca.pem)
    plaintext = grpc.aio.insecure_channel(running.address)
    anonymous = grpc.aio.secure_channel(running.address, no_cert,
                                        options=[("grpc.ssl_target_name_override", "quarry-sparse")])
    async with channel(running.address, foreign) as ch, plaintext, anonymous:
        for ch_ in (ch, plaintext, anonymous):
            assert await _code(sparse_pb2_grpc.SparseSearchStub(ch_).Count(COUNT, timeout=5)) == (
                grpc.StatusCode.UNAVAILABLE)


async def test_mtls_with_a_token_as_well_needs_both(serve: Serve, tmp_path: Path) -> None:
    ca = Authority.create()
    running = await serve(service_auth=ServiceAuth(**ca.write(tmp_path / "server", "quarry-sparse"),
                                                   token=SecretStr("t")))
    client_files = ca.write(tmp_path / "client", "quarry-gateway")
    async with channel(running.address, ServiceAuth(**client_files, server_name="quarry-sparse")) as ch:
        assert await _code(sparse_pb2_grpc.SparseSearchStub(ch).Count(COUNT, timeout=5)) == (
            grpc.StatusCode.UNAUTHENTICATED)
    both = ServiceAuth(**client_files, server_name="quarry-sparse", token=SecretStr("t"))
    async with channel(running.address, both) as ch:
        assert (await sparse_pb2_grpc.SparseSearchStub(ch).Count(COUNT, timeout=5)).count == 0


async def test_the_server_certificate_rotates_without_a_restart(serve: Serve, tmp_path: Path) -> None:
    """New connections get the rewritten certificate (here issued for another name): the
    name the old one carried no longer verifies, the new name does, and the server never stopped."""
    ca = Authority.create()
    server_files = ca.write(tmp_path / "server", "sparse-old")
    running = await serve(service_auth=ServiceAuth(**server_files, reload_seconds=0.01))
    client_files = ca.write(tmp_path / "client", "quarry-gateway")

    async def works(name: str) -> bool:
        async with channel(running.address, ServiceAuth(**client_files, server_name=name)) as ch:
            try:
                await sparse_pb2_grpc.SparseSearchStub(ch).Count(COUNT, timeout=5)
            except grpc.aio.AioRpcError:
                return False
            return True

    assert (await works("sparse-old"), await works("sparse-new")) == (True, False)
    cert, key = ca.issue("sparse-new")
    _write(server_files["key_file"], key)
    _write(server_files["cert_file"], cert)
    await asyncio.sleep(0.05)
    assert (await works("sparse-new"), await works("sparse-old")) == (True, False)


async def test_a_client_rebuilds_its_channels_when_its_certificate_files_change(serve: Serve, tmp_path: Path) -> None:
    """gRPC Python cannot reload a client certificate: ``Channels`` builds new channels with the
    new files and the stubs it handed out follow them. Here the server moves from trusting CA 1
    to CA 2 while the client's files move to a certificate of CA 2."""
    ca1, ca2 = Authority.create("ca-1"), Authority.create("ca-2")
    server_files = ca1.write(tmp_path / "server", "quarry-sparse")
    _write(server_files["ca_file"], ca1.pem + ca2.pem)
    running = await serve(service_auth=ServiceAuth(**server_files, reload_seconds=0.01))
    client_files = ca1.write(tmp_path / "client", "quarry-gateway")
    client_auth = ServiceAuth(**client_files, server_name="quarry-sparse", reload_seconds=0.01)
    _write(client_auth.ca_file or "", ca1.pem + ca2.pem)  # it must keep trusting the server
    channels = Channels(client_auth, grace=0.1)
    stub = channels.stub(sparse_pb2_grpc.SparseSearchStub, running.address)
    try:
        assert (await stub.Count(COUNT, timeout=10)).count == 0
        cert, key = ca2.issue("quarry-gateway")
        _write(client_files["key_file"], key)
        _write(client_files["cert_file"], cert)
        _write(server_files["ca_file"], ca2.pem)  # the server stops trusting CA 1
        await asyncio.sleep(0.05)
        assert (await stub.Count(COUNT, timeout=10)).count == 0
        assert channels.generation == 1
        stale = ServiceAuth(**ca1.write(tmp_path / "stale", "quarry-gateway"), server_name="quarry-sparse")
        async with channel(running.address, stale.model_copy(update={"ca_file": client_auth.ca_file})) as ch:
            assert await _code(sparse_pb2_grpc.SparseSearchStub(ch).Count(COUNT, timeout=5)) == (
                grpc.StatusCode.UNAVAILABLE)
    finally:
        await channels.close()


async def test_with_mtls_the_health_port_answers_probes_in_plaintext(serve: Serve, tmp_path: Path) -> None:
    ca = Authority.create()
    running = await serve(service_auth=ServiceAuth(**ca.write(tmp_path / "server", "quarry-sparse")), health_port=0)
    assert running.health_port > 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.health_port}") as ch:
        for _ in range(100):
            reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(0.05)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # The health port serves health only.
        assert await _code(sparse_pb2_grpc.SparseSearchStub(ch).Count(COUNT, timeout=5)) == (
            grpc.StatusCode.UNIMPLEMENTED)
