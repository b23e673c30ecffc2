"""``python -m services.dense``: settings -> bootstrap -> serve (the only place reading the environment)."""

from __future__ import annotations

from services.common import logging as quarry_logging
from services.common.grpc_server import run, serve
from services.dense.bootstrap import bootstrap
from services.dense.servicer import SERVICE_NAME, DenseSearchServicer, register
from services.dense.settings import DenseSettings


async def _main() -> None:
    settings = DenseSettings()
    quarry_logging.configure("dense", level=settings.log_level, fmt=settings.log_format)
    app = bootstrap(settings)
    servicer = DenseSearchServicer(app.service)
    await serve(settings, register(servicer), [SERVICE_NAME], app.ready, on_stop=app.close)


def main() -> None:
    """Console entry point ``quarry-dense``."""
    run(_main)


if __name__ == "__main__":
    main()
