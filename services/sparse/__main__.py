"""``python -m services.sparse`` / ``quarry-sparse``: settings -> bootstrap -> serve."""

from __future__ import annotations

from services.common.process import Process
from services.common.process import main as process_main
from services.sparse.bootstrap import bootstrap
from services.sparse.servicer import SERVICE_NAME, SparseServicer, register
from services.sparse.settings import SparseSettings


def build(settings: SparseSettings) -> Process:
    app = bootstrap(settings)
    return Process(app.ready, app.close, register(SparseServicer(app.service)), [SERVICE_NAME])


def main() -> None:
    """Console entry point ``quarry-sparse``."""
    process_main(SparseSettings, build)


if __name__ == "__main__":
    main()
