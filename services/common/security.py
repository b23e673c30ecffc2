"""Service-to-service authentication: every internal gRPC service refuses calls without a
service credential.

Two credentials, set per process under ``QUARRY_<PROCESS>_SERVICE_AUTH__*`` (``ServiceAuth``):

- **mTLS** (the cluster): ``CERT_FILE`` / ``KEY_FILE`` (this process's certificate) and
  ``CA_FILE`` (the CA that signs every Quarry process). A server asks every client for a
  certificate signed by that CA and refuses the handshake otherwise; a client verifies the
  server's certificate the same way. Files come from Kubernetes Secrets and are re-read when
  they change: a server picks up a rotated certificate for new connections without a restart
  (gRPC's dynamic server credentials), a client rebuilds its channels (gRPC Python cannot
  reload a client certificate in place), so a rotation needs no downtime.
- **a shared token** (``quarry up``, which generates one per stack): sent as
  ``authorization: Bearer <token>`` on every call and compared in constant time. ``TOKEN`` or
  ``TOKEN_FILE`` (re-read when it changes), and ``PREVIOUS_TOKENS`` still accepted while a
  rotation rolls out.

Either one, or both, may be on. ``INSECURE=true`` is the explicit opt-out (any caller is
accepted: a development cluster behind a mesh that authenticates for it); a server with no
credential configured and no opt-out refuses to start. The standard health service is exempt:
kubelet probes and load balancers carry no credentials, and health says nothing about tenants.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import grpc
from pydantic import BaseModel, Field, SecretStr, model_validator

log = logging.getLogger(__name__)

AUTHORIZATION = "authorization"
#: Methods any caller may use (probes carry no credentials).
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/",)

_Stub = TypeVar("_Stub")


class CredentialError(RuntimeError):
    """The service credential settings cannot work (a missing file, no credential at all)."""


class ServiceAuth(BaseModel):
    """The service credential of one process, as a server and as a client of the others."""

    token: SecretStr | None = Field(default=None, description="shared service token (quarry up generates one)")
    token_file: str | None = Field(default=None, description="file holding the token, re-read when it changes")
    previous_tokens: list[SecretStr] = Field(
        default_factory=list, description="tokens still accepted during a rotation (JSON list)"
    )
    cert_file: str | None = Field(default=None, description="mTLS: this process's certificate (PEM)")
    key_file: str | None = Field(default=None, description="mTLS: its private key (PEM)")
    ca_file: str | None = Field(default=None, description="mTLS: the CA that signs every Quarry process")
    server_name: str | None = Field(
        default=None, description="mTLS client: the name to verify in servers' certificates (default: the host)"
    )
    insecure: bool = Field(default=False, description="accept any caller and send no credential (opt-out)")
    reload_seconds: float = Field(default=30.0, gt=0, description="how often credential files are re-checked")

    @model_validator(mode="after")
    def _complete(self) -> ServiceAuth:
        tls = [self.cert_file, self.key_file, self.ca_file]
        if any(tls) and not all(tls):
            raise ValueError("mTLS needs cert_file, key_file and ca_file together")
        if self.token is not None and self.token_file:
            raise ValueError("set token or token_file, not both")
        return self

    @property
    def tls(self) -> bool:
        return self.cert_file is not None

    @property
    def uses_token(self) -> bool:
        return self.token is not None or self.token_file is not None

    def require(self, env_prefix: str) -> None:
        """Refuse to serve without a credential unless the opt-out is explicit."""
        if not (self.tls or self.uses_token or self.insecure):
            key = f"{env_prefix}SERVICE_AUTH__"
            raise CredentialError(
                f"no service credential: set {key}TOKEN (or {key}TOKEN_FILE), or {key}CERT_FILE, {key}KEY_FILE and "
                f"{key}CA_FILE for mTLS; {key}INSECURE=true accepts any caller"
            )


class _WatchedFile:
    """A file's bytes, read again when its modification time or size changes (checked at most
    every ``every`` seconds). Kubernetes updates a mounted Secret by swapping a symlink."""

    def __init__(self, path: str, every: float) -> None:
        self.path = path
        self._every = every
        self._checked = 0.0
        self._stamp: tuple[int, int] | None = None
        self._data = b""

    def _read_stamp(self) -> tuple[int, int]:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise CredentialError(f"cannot read {self.path}: {exc.strerror}") from exc
        return st.st_mtime_ns, st.st_size

    def read(self) -> tuple[bytes, bool]:
        """The contents, and whether they changed since the last call."""
        now = time.monotonic()
        if self._stamp is not None and now - self._checked < self._every:
            return self._data, False
        self._checked = now
        stamp = self._read_stamp()
        if stamp == self._stamp:
            return self._data, False
        self._data = Path(self.path).read_bytes()
        self._stamp = stamp
        return self._data, True


class TokenSource:
    """The token a client sends and the tokens a server accepts."""

    def __init__(self, auth: ServiceAuth) -> None:
        self._fixed = auth.token.get_secret_value() if auth.token is not None else None
        self._file = _WatchedFile(auth.token_file, auth.reload_seconds) if auth.token_file else None
        self._previous = [t.get_secret_value() for t in auth.previous_tokens]

    def current(self) -> str:
        if self._file is not None:
            data, _ = self._file.read()
            return data.decode().strip()
        return self._fixed or ""

    def accepts(self, presented: str) -> bool:
        """Constant-time comparison against the current and the previous tokens."""
        given = presented.encode()
        candidates = [self.current(), *self._previous]
        ok = False
        for candidate in candidates:
            if candidate:  # never accept an empty token
                ok |= hmac.compare_digest(given, candidate.encode())
        return ok


# -- server side ------------------------------------------------------------------------------


def server_credentials(auth: ServiceAuth) -> grpc.ServerCredentials | None:
    """mTLS server credentials that re-read the files for each new connection when they changed;
    ``None`` without TLS (the port is plaintext and the token is checked instead)."""
    if not auth.tls:
        return None
    assert auth.cert_file and auth.key_file and auth.ca_file
    files = [_WatchedFile(p, auth.reload_seconds) for p in (auth.cert_file, auth.key_file, auth.ca_file)]

    def configuration(force: bool) -> grpc.ServerCertificateConfiguration | None:
        (cert, c1), (key, c2), (ca, c3) = (f.read() for f in files)
        if not (force or c1 or c2 or c3):
            return None  # unchanged: gRPC keeps the current configuration
        if force is False:
            log.info("service certificate files changed: new connections use the new certificate")
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    initial = configuration(True)
    assert initial is not None
    return grpc.dynamic_ssl_server_credentials(
        initial, lambda: configuration(False), require_client_authentication=True
    )


def _bearer(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    for key, value in metadata or ():
        if key == AUTHORIZATION:
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


_DENIED = "a valid service credential is required"


def _denied_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that answers UNAUTHENTICATED."""

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)
        yield  # pragma: no cover - abort raises

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(bool(handler.request_streaming), bool(handler.response_streaming))]
    behaviour = streaming if handler.response_streaming else unary
    return make(behaviour, request_deserializer=handler.request_deserializer,  # type: ignore[operator]
                response_serializer=handler.response_serializer)


class ServiceAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses every call without the service token (UNAUTHENTICATED), health excepted.

    With mTLS only, the transport has already refused clients without a valid certificate, and
    this interceptor lets every call through.
    """

    def __init__(self, auth: ServiceAuth) -> None:
        self._tokens = TokenSource(auth) if auth.uses_token else None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or self._tokens is None or details.method.startswith(PUBLIC_PREFIXES):
            return handler
        if self._tokens.accepts(_bearer(details.invocation_metadata)):
            return handler
        log.warning("refused %s: no valid service credential", details.method)
        return _denied_handler(handler)


# -- client side ------------------------------------------------------------------------------


class _TokenClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds ``authorization: Bearer <token>`` to every call."""

    def __init__(self, tokens: TokenSource) -> None:
        self._tokens = tokens

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = [m for m in (details.metadata or ()) if m[0] != AUTHORIZATION]
        metadata.append((AUTHORIZATION, f"Bearer {self._tokens.current()}"))
        return await continuation(details._replace(metadata=metadata), request)


@dataclass(frozen=True)
class ClientCredentials:
    """What a channel needs: TLS material and/or the token interceptor."""

    channel_credentials: grpc.ChannelCredentials | None
    interceptors: tuple[grpc.aio.ClientInterceptor, ...]
    server_name: str | None
    fingerprint: str


def client_credentials(auth: ServiceAuth) -> ClientCredentials:
    interceptors = (_TokenClientInterceptor(TokenSource(auth)),) if auth.uses_token and not auth.insecure else ()
    if not auth.tls or auth.insecure:
        return ClientCredentials(None, interceptors, None, "")
    assert auth.cert_file and auth.key_file and auth.ca_file
    try:
        cert, key, ca = (Path(p).read_bytes() for p in (auth.cert_file, auth.key_file, auth.ca_file))
    except OSError as exc:
        raise CredentialError(f"cannot read the service certificate files: {exc}") from exc
    fingerprint = hashlib.sha256(cert + key + ca).hexdigest()
    return ClientCredentials(
        grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert),
        interceptors, auth.server_name, fingerprint,
    )


def tls_fingerprint(auth: ServiceAuth) -> str:
    """A digest of the client's TLS files ("" without TLS): a change means "rebuild the channels"."""
    if not auth.tls or auth.insecure:
        return ""
    digest = hashlib.sha256()
    for path in (auth.cert_file, auth.key_file, auth.ca_file):
        try:
            digest.update(Path(cast(str, path)).read_bytes())
        except OSError:
            return ""  # mid-swap: keep the current channels until the files are readable again
    return digest.hexdigest()
