"""Every QUARRY_* variable in the rendered manifests is a real setting of the process it is given to.

pydantic-settings ignores unknown variables (``extra="ignore"``), so a misspelt name in a manifest
would silently leave the default in force. The settings classes are the reference: their env
prefix and fields (``__`` descends into nested models), read from the classes themselves.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from tests.deploy.manifests import COMBINATIONS, Doc, quarry_deployments

PROCESSES = ("dense", "sparse", "rerank", "files", "ingest")
SETTINGS_MODULES = ["gateway.settings", *(f"services.{name}.settings" for name in PROCESSES)]
# Stand-ins for values that come from Secrets, shaped like the real thing so validators accept them.
SECRET_STANDINS = {
    "database-url": "postgresql://quarry:pw@postgres:5432/quarry",
    "redis-url": "redis://:pw@redis:6379/0",
    "qdrant-url": "http://qdrant:6333",
    "opensearch-url": "http://opensearch:9200",
    "opensearch-username": "quarry",
    "previous-tokens": '["an-older-token"]',
}


def settings_classes() -> dict[str, type[BaseSettings]]:
    """Env prefix (``QUARRY_DENSE_``) -> the settings class that reads it."""
    found: dict[str, type[BaseSettings]] = {}
    for module in map(importlib.import_module, SETTINGS_MODULES):
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj.__module__ == module.__name__:
                prefix = obj.model_config.get("env_prefix", "")
                if prefix.startswith("QUARRY_"):
                    found[prefix] = obj
    return found


def unknown_setting(cls: type[BaseModel], name: str) -> str | None:
    """None when ``name`` (after the prefix, e.g. ``DEFAULTS__TOP_K``) is a field of ``cls``, else why not."""
    model: type[BaseModel] = cls
    parts = name.lower().split("__")
    for depth, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return f"{model.__name__} has no field {part!r}"
        if depth < len(parts) - 1:
            nested = field.annotation
            if not (isinstance(nested, type) and issubclass(nested, BaseModel)):
                return f"{model.__name__}.{part} is not a nested model"
            model = nested
    return None


def quarry_env(docs: list[Doc]) -> list[tuple[str, str, dict[str, Any]]]:
    """(component, env name, env entry) for every QUARRY_* variable of every container."""
    out = []
    for d in docs:
        if d["kind"] not in ("Deployment", "StatefulSet"):
            continue
        labels = d["spec"]["template"]["metadata"]["labels"]
        component = labels.get("app.kubernetes.io/component", d["metadata"]["name"])
        for c in d["spec"]["template"]["spec"]["containers"]:
            out += [(component, e["name"], e) for e in c.get("env", []) if e["name"].startswith("QUARRY_")]
            assert not c.get("envFrom"), "envFrom hides names from this check; list variables one by one"
    return out


@pytest.fixture(scope="module")
def classes() -> dict[str, type[BaseSettings]]:
    found = settings_classes()
    assert set(found) == {f"QUARRY_{s}_" for s in ("GATEWAY", "DENSE", "SPARSE", "RERANK", "FILES", "INGEST")}
    return found


def test_the_check_catches_misspelt_and_misplaced_names(classes: dict[str, type[BaseSettings]]) -> None:
    assert unknown_setting(classes["QUARRY_DENSE_"], "QDRANT_URL") is None
    assert unknown_setting(classes["QUARRY_GATEWAY_"], "DEFAULTS__RERANK_DEPTH") is None
    assert unknown_setting(classes["QUARRY_DENSE_"], "QDRANT_ULR") == "DenseSettings has no field 'qdrant_ulr'"
    assert unknown_setting(classes["QUARRY_GATEWAY_"], "DEFAULTS__RERANK_DEPT") is not None
    assert unknown_setting(classes["QUARRY_GATEWAY_"], "PORT__X") == "GatewaySettings.port is not a nested model"


@pytest.mark.parametrize("combo", COMBINATIONS, ids=lambda c: c.id)
def test_every_quarry_variable_is_a_setting_of_its_process(
    combo: Any, rendered: dict[str, list[Doc]], classes: dict[str, type[BaseSettings]]
) -> None:
    docs = rendered[combo.id]
    entries = quarry_env(docs)
    assert entries, "no QUARRY_* variables rendered"
    for component, name, _ in entries:
        prefix = f"QUARRY_{component.upper()}_"
        assert prefix in classes, f"{name} is set on {component}, which is not a Quarry process"
        assert name.startswith(prefix), f"{name} is set on {component}, whose settings read {prefix}*"
        problem = unknown_setting(classes[prefix], name.removeprefix(prefix))
        assert problem is None, f"{component}: {name}: {problem}"


@pytest.mark.parametrize("combo", COMBINATIONS, ids=lambda c: c.id)
def test_each_process_accepts_its_rendered_settings(
    combo: Any, rendered: dict[str, list[Doc]], classes: dict[str, type[BaseSettings]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The settings class validates the rendered values (required fields present, types and patterns right),
    and the process listens on the port its container declares, on every interface."""
    for component, deployment in quarry_deployments(rendered[combo.id]).items():
        for name in [n for n in os.environ if n.startswith("QUARRY_")]:
            monkeypatch.delenv(name)
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        for e in container.get("env", []):
            if "value" in e:
                monkeypatch.setenv(e["name"], e["value"])
            else:
                key = e["valueFrom"]["secretKeyRef"]["key"]
                monkeypatch.setenv(e["name"], SECRET_STANDINS.get(key, "secret"))
        settings = classes[f"QUARRY_{component.upper()}_"]()
        assert settings.host == "0.0.0.0", component  # type: ignore[attr-defined]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        serving = ports.get("grpc", ports.get("http"))
        assert settings.port == serving, component  # type: ignore[attr-defined]
        if "health" in ports:
            assert settings.health_port == ports["health"], component  # type: ignore[attr-defined]
