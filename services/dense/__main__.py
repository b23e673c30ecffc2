"""``python -m services.dense`` / ``quarry-dense``: settings -> bootstrap -> serve."""

from __future__ import annotations

from services.common.process import Process
from services.common.process import main as process_main
from services.dense.bootstrap import bootstrap
from services.dense.servicer import SERVICE_NAME, DenseSearchServicer, register
from services.dense.settings import DenseSettings


def build(settings: DenseSettings) -> Process:
    app = bootstrap(settings)
    return Process(app.ready, app.close, register(DenseSearchServicer(app.service)), [SERVICE_NAME])


def main() -> None:
    """Console entry point ``quarry-dense``."""
    process_main(DenseSettings, build)


if __name__ == "__main__":
    main()
