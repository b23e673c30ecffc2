"""The rendered manifests of every combination, once per session (see ``manifests.render``)."""

from __future__ import annotations

import pytest

from tests.deploy.manifests import COMBINATIONS, Doc, render


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Doc]]:
    """Every combination's documents, keyed by ``Combination.id``."""
    return {combo.id: render(combo, tmp_path_factory.mktemp("kustomize")) for combo in COMBINATIONS}
