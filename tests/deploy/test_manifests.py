"""The rendered manifests are valid Kubernetes objects and keep the deployment's rules.

Validation is offline with ``kubernetes-validate`` in strict mode (unknown fields are errors)
against a pinned Kubernetes version whose schemas the wheel bundles. A kind without a schema
fails here, where the CLI would only warn.
"""

from __future__ import annotations

import functools
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as validate_utils
from kubernetes_validate.utils import SchemaNotFoundError

from gateway.settings import GatewaySettings
from tests.deploy.manifests import COMBINATIONS, COMPONENTS, ROOT, Combination, Doc, quarry_deployments, workloads

KUBERNETES_VERSION = "1.37.0"
QUARRY_PORT_GRPC = 50051
_validated: set[str] = set()  # identical objects recur across combinations; validate each once


def by_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pod_labels(docs: list[Doc]) -> list[dict[str, str]]:
    return [w["spec"]["template"]["metadata"]["labels"] for w in workloads(docs)]


@pytest.fixture(scope="module", autouse=True)
def _schemas_parsed_once() -> Iterator[None]:
    """kubernetes-validate re-reads its 2 MB definitions file for every object; read each schema file once."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(validate_utils, "schema_contents", functools.cache(validate_utils.schema_contents))
        yield


@pytest.fixture(params=COMBINATIONS, ids=lambda c: c.id)
def docs(request: pytest.FixtureRequest, rendered: dict[str, list[Doc]]) -> list[Doc]:
    combo: Combination = request.param
    return rendered[combo.id]


def test_every_combination_is_rendered() -> None:
    """Two overlays, every subset of the components, the committed overlays and the base."""
    assert len(COMBINATIONS) == 1 + len({c.overlay for c in COMBINATIONS if c.overlay}) * (2 ** len(COMPONENTS) + 1)
    assert {"in-cluster-engines", "network-policies"} <= set(COMPONENTS)


#: Custom resources of the operators the monitoring component uses: no schema in the wheel, checked
#: field by field in test_monitoring.py instead.
CUSTOM_RESOURCE_GROUPS = frozenset({"monitoring.coreos.com", "keda.sh"})


def validation_error(doc: Doc) -> str | None:
    if doc["apiVersion"].split("/")[0] in CUSTOM_RESOURCE_GROUPS:
        return None
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except SchemaNotFoundError as exc:
        return str(exc.message)
    except kubernetes_validate.ValidationError as exc:
        return f"{'.'.join(str(p) for p in exc.path)}: {exc.message}"
    return None


def test_validates_strictly(docs: list[Doc]) -> None:
    errors = []
    for doc in docs:
        key = json.dumps(doc, sort_keys=True)
        if key not in _validated:
            error = validation_error(doc)
            if error:
                errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {error}")
            else:
                _validated.add(key)
    assert not errors, "\n".join(errors)


def test_names_are_unique_and_namespaced_in_overlays(docs: list[Doc]) -> None:
    ids = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(ids) == len(set(ids))
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    if any(d["kind"] == "Namespace" for d in docs):  # an overlay
        assert len(namespaces) == 1 and None not in namespaces


def test_pods_are_non_root_read_only_and_bounded(docs: list[Doc]) -> None:
    for w in workloads(docs):
        name, pod = w["metadata"]["name"], w["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["serviceAccountName"] in by_kind(docs, "ServiceAccount"), name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], name
            if w["metadata"]["labels"]["app.kubernetes.io/name"] in ("quarry", "qdrant", "postgresql", "redis"):
                assert sc["readOnlyRootFilesystem"] is True, name
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][bound]), f"{name}: {bound}"
            assert ":" in c["image"] and not c["image"].endswith(":latest"), f"{name}: unpinned image {c['image']}"


def _console_scripts() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


def test_quarry_processes_run_their_console_script(docs: list[Doc]) -> None:
    scripts = _console_scripts()
    deployments = quarry_deployments(docs)
    assert set(deployments) == {"gateway", "dense", "sparse", "rerank", "files", "ingest"}
    for component, d in deployments.items():
        (container,) = d["spec"]["template"]["spec"]["containers"]
        assert container["command"] == [f"quarry-{component}"] and container["command"][0] in scripts


def test_probes_and_ports(docs: list[Doc]) -> None:
    for component, d in quarry_deployments(docs).items():
        (c,) = d["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert probe in c, f"{component}: no {probe}"
        if component == "gateway":
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        elif "health" in ports:
            # mTLS: kubelet cannot present a certificate, so health also answers in plaintext there.
            assert c["readinessProbe"]["grpc"]["port"] == ports["health"], component
            assert _env(c, f"QUARRY_{component.upper()}_HEALTH_PORT") == str(ports["health"]), component
        else:
            # Native gRPC probe against grpc.health.v1 on the serving port.
            assert c["readinessProbe"]["grpc"]["port"] == ports["grpc"] == QUARRY_PORT_GRPC, component


def test_every_process_carries_the_service_credential(docs: list[Doc], request: pytest.FixtureRequest) -> None:
    """The token from the Secret mounted as a file (rotation without a restart); with the mtls
    component, a certificate of the process's own TLS Secret as well."""
    combo: Combination = request.node.callspec.params["docs"]
    for component, d in quarry_deployments(docs).items():
        spec = d["spec"]["template"]["spec"]
        (c,) = spec["containers"]
        key = f"QUARRY_{component.upper()}_SERVICE_AUTH__"
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert _env(c, f"{key}TOKEN_FILE") == f"{mounts['service-auth']}/token", component
        assert volumes["service-auth"]["secret"]["secretName"] == "quarry-service-auth"
        mtls = "service-tls" in volumes
        assert mtls == ("mtls" in _components(combo)), (component, combo.id)
        if mtls:
            assert volumes["service-tls"]["secret"]["secretName"] == f"quarry-{component}-tls"
            for name, file in (("CERT_FILE", "tls.crt"), ("KEY_FILE", "tls.key"), ("CA_FILE", "ca.crt")):
                assert _env(c, key + name) == f"{mounts['service-tls']}/{file}", (component, name)


def _components(combo: Combination) -> tuple[str, ...]:
    """The components a combination renders with (an overlay as committed: its own list)."""
    if combo.overlay is None:
        return ()
    if combo.components is not None:
        return combo.components
    spec = yaml.safe_load((ROOT / "deploy" / "overlays" / combo.overlay / "kustomization.yaml").read_text())
    return tuple(Path(c).name for c in spec.get("components", []))


def _env(container: dict[str, Any], name: str) -> str | None:
    return next((e.get("value") for e in container.get("env", []) if e["name"] == name), None)


def test_termination_grace_outlasts_the_apps_grace(docs: list[Doc]) -> None:
    from services.common.settings import ServiceSettings

    default = ServiceSettings.model_fields["grace_seconds"].default
    for component, d in quarry_deployments(docs).items():
        pod = d["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        if component == "gateway":
            default = GatewaySettings.model_fields["grace_seconds"].default
        grace = float(_env(c, f"QUARRY_{component.upper()}_GRACE_SECONDS") or default)
        pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pod["terminationGracePeriodSeconds"] > pre_stop + grace, component


def test_stateless_processes_have_autoscaling_and_disruption_budgets(docs: list[Doc]) -> None:
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in by_kind(docs, "HorizontalPodAutoscaler").values()}
    pdbs = list(by_kind(docs, "PodDisruptionBudget").values())
    deployments = by_kind(docs, "Deployment")
    assert set(hpas) <= set(deployments)
    for name, d in deployments.items():
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert any(selects(p["spec"]["selector"]["matchLabels"], labels) for p in pdbs), f"{name}: no PDB"
        if name in hpas:
            # An applied replica count would fight the autoscaler.
            assert "replicas" not in d["spec"], name
            assert 1 <= hpas[name]["spec"]["minReplicas"] <= hpas[name]["spec"]["maxReplicas"]
        else:
            assert name == "quarry-ingest", f"{name}: no HPA"


def test_services_select_pods_and_addresses_resolve(docs: list[Doc]) -> None:
    services = by_kind(docs, "Service")
    labels = pod_labels(docs)
    for name, svc in services.items():
        assert any(selects(svc["spec"]["selector"], lab) for lab in labels), f"{name} selects no pod"
    for d in quarry_deployments(docs).values():
        (c,) = d["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", []):
            if e["name"].endswith("_ADDR"):
                host, port = e["value"].rsplit(":", 1)
                assert host in services, f"{e['name']} -> {host}: no such Service"
                assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}, e["name"]


def test_env_entries_are_well_formed(docs: list[Doc]) -> None:
    for w in workloads(docs):
        for c in w["spec"]["template"]["spec"]["containers"]:
            names = [e["name"] for e in c.get("env", [])]
            assert len(names) == len(set(names)), f"{w['metadata']['name']}: duplicate env"
            for e in c.get("env", []):
                assert ("value" in e) != ("valueFrom" in e), f"{w['metadata']['name']}: {e['name']}"


SECRETS = {"quarry-admin-key", "quarry-endpoints", "quarry-engine-credentials", "quarry-gateway", "quarry-service-auth"}


def secret_refs(docs: list[Doc]) -> set[tuple[str, str]]:
    refs = set()
    for w in workloads(docs):
        for c in w["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
    return refs


def test_secrets_are_referenced_never_inlined_and_documented(docs: list[Doc]) -> None:
    """Credentials come from the two Secrets docs/deploy.md creates, with the keys it creates."""
    assert not [d for d in docs if d["kind"] == "Secret"], "a Secret in the manifests would put credentials in git"
    guide = (ROOT / "docs" / "deploy.md").read_text()
    for secret, key in secret_refs(docs):
        assert secret in SECRETS, secret
        assert re.search(rf"create secret generic {secret}\b", guide), f"docs/deploy.md does not create {secret}"
        assert f"--from-literal={key}=" in guide, f"docs/deploy.md does not set {secret}/{key}"
    for w in workloads(docs):
        for c in w["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                assert not re.search(r"://[^/@\s]+:[^/@\s]+@", e.get("value", "")), f"credentials in {e['name']}"


def test_network_policies_select_real_pods_and_ports(docs: list[Doc]) -> None:
    policies = by_kind(docs, "NetworkPolicy")
    if not policies:
        return
    engines_present = any(w["kind"] == "StatefulSet" for w in workloads(docs))
    labels = pod_labels(docs)
    ports_of: list[tuple[dict[str, str], set[int | str]]] = [
        (w["spec"]["template"]["metadata"]["labels"],
         {v for c in w["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])
          for v in (p["containerPort"], p.get("name"))})
        for w in workloads(docs)
    ]
    for name, policy in policies.items():
        pod_selector = policy["spec"]["podSelector"]
        selector = pod_selector.get("matchLabels", {})
        targets = [ports for lab, ports in ports_of if selects(selector, lab)
                   and all(lab.get(e["key"]) in e["values"] for e in pod_selector.get("matchExpressions", [])
                           if e["operator"] == "In")]
        is_engine = selector.get("app.kubernetes.io/name", "quarry") != "quarry"
        if not targets:
            assert is_engine and not engines_present, f"{name} selects no pod"
            continue
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                assert all(port["port"] in ports for ports in targets), f"{name}: port {port['port']}"
            for peer in rule.get("from", []):
                if "podSelector" not in peer:  # a namespace (monitoring) outside the rendered tree
                    continue
                peer_selector = peer["podSelector"]["matchLabels"]
                assert any(selects(peer_selector, lab) for lab in labels), f"{name}: peer selects no pod"
    if "quarry-rerank-ingress" not in policies:  # only the monitoring component's scrape policy
        assert set(policies) == {"quarry-allow-metrics"}
        return
    # Only the gateway and the ingest worker reach the services; only the gateway reaches rerank.
    rerank = policies["quarry-rerank-ingress"]["spec"]["ingress"]
    assert [p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for r in rerank for p in r["from"]] == [
        "gateway"
    ]
