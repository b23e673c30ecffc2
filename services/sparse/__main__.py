"""``python -m services.sparse`` / ``quarry-sparse``: settings -> bootstrap -> serve."""

from __future__ import annotations

import logging

from services.common.grpc_server import run, serve
from services.common.logging import configure
from services.sparse.bootstrap import SparseApp, bootstrap
from services.sparse.servicer import SERVICE_NAME, SparseServicer, register
from services.sparse.settings import SparseSettings

log = logging.getLogger("services.sparse")


async def _serve(settings: SparseSettings, app: SparseApp) -> None:
    await serve(settings, register(SparseServicer(app.service)), [SERVICE_NAME], app.ready, on_stop=app.close)


def main() -> None:
    """Run the sparse service until SIGTERM/SIGINT."""
    settings = SparseSettings()
    configure("sparse", level=settings.log_level, fmt=settings.log_format)
    app = bootstrap(settings)
    run(lambda: _serve(settings, app))


if __name__ == "__main__":
    main()
