"""``python -m services.rerank`` / ``quarry-rerank``: settings -> bootstrap -> serve."""

from __future__ import annotations

import logging

from services.common.process import Process
from services.common.process import main as process_main
from services.rerank.bootstrap import bootstrap
from services.rerank.servicer import SERVICE_NAME, RerankServicer
from services.rerank.settings import RerankSettings

log = logging.getLogger("services.rerank")


def build(settings: RerankSettings) -> Process:
    app = bootstrap(settings)
    log.info("rerank model %s (backend %s)", app.service.model, settings.backend)
    return Process(app.ready, app.close, RerankServicer(app.service).register, [SERVICE_NAME])


def main() -> None:
    """Console entry point ``quarry-rerank``."""
    process_main(RerankSettings, build)


if __name__ == "__main__":
    main()
