"""``python -m services.rerank`` / ``quarry-rerank``: settings -> bootstrap -> serve."""

from __future__ import annotations

import logging

from services.common import logging as quarry_logging
from services.common.grpc_server import run, serve
from services.rerank.bootstrap import bootstrap
from services.rerank.servicer import SERVICE_NAME, RerankServicer
from services.rerank.settings import RerankSettings

log = logging.getLogger("services.rerank")


async def _serve(settings: RerankSettings) -> None:
    app = bootstrap(settings)
    log.info("rerank model %s (backend %s)", app.service.model, settings.backend)
    await serve(settings, RerankServicer(app.service).register, [SERVICE_NAME], app.ready, on_stop=app.close)


def main() -> None:
    """Entry point: the only place that reads the environment."""
    settings = RerankSettings()
    quarry_logging.configure("rerank", level=settings.log_level, fmt=settings.log_format)
    run(lambda: _serve(settings))


if __name__ == "__main__":
    main()
