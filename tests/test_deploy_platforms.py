"""Platform manifests (deploy/k8s/kserve, monitoring, keda): valid against their projects'
pinned CRD schemas (tests/schemas/crds, strictly: no unknown field), and in agreement with the
server, the base manifests, the alert rules and the dashboard."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import joblib
import pytest
import yaml
from support.crd import SCHEMAS, pinned, validate
from support.data import iris_estimator
from support.net import free_port
from support.servers import MlserveProcess, process_env
from test_deploy import DASHBOARD, K8S, PROMETHEUS, k8s_object, load_yaml, pod_spec, run_tool, tool

OPTIONAL = ("kserve", "monitoring", "keda")
MANIFESTS = sorted(
    path for folder in OPTIONAL for path in (K8S / folder).glob("*.yaml")
    if path.name != "kustomization.yaml"
)  # fmt: skip
PINNED = {
    ("serving.kserve.io", "ServingRuntime", "v1alpha1"),
    ("serving.kserve.io", "InferenceService", "v1beta1"),
    ("monitoring.coreos.com", "PodMonitor", "v1"),
    ("keda.sh", "ScaledObject", "v1alpha1"),
}


def _rel(path: Path) -> str:
    return str(path.relative_to(K8S))


def objects(folder: str) -> list[dict[str, Any]]:
    paths = sorted(p for p in (K8S / folder).glob("*.yaml") if p.name != "kustomization.yaml")
    return [doc for path in paths for doc in load_yaml(path)]


def the(folder: str, kind: str) -> list[dict[str, Any]]:
    return [o for o in objects(folder) if o["kind"] == kind]


# ------------------------------------------------------------------------------ schemas
@pytest.mark.parametrize("path", MANIFESTS, ids=_rel)
def test_manifest_is_valid_against_its_pinned_crd_schema(path: Path) -> None:
    for obj in load_yaml(path):
        errors = validate(obj)
        assert not errors, f"{_rel(path)} {obj['kind']}/{obj['metadata']['name']}: {errors}"


def test_every_crd_schema_is_pinned_with_its_source() -> None:
    readme = (SCHEMAS.parent / "README.md").read_text(encoding="utf-8")
    files = {p.name for p in SCHEMAS.glob("*.json")}
    assert files == {f"{g}_{k}_{v}.json" for g, k, v in PINNED}
    for group, kind, version in PINNED:
        data = pinned(group, kind, version)
        assert (data["group"], data["kind"], data["version"]) == (group, kind, version)
        assert data["source"] in readme, f"{kind}: its source is not in tests/schemas/README.md"
        assert re.fullmatch(r"github\.com/[\w.-]+/[\w.-]+@v[\d.]+:\S+\.yaml", data["source"])
    kinds = {(o["apiVersion"], o["kind"]) for path in MANIFESTS for o in load_yaml(path)}
    assert kinds == {(f"{g}/{v}", k) for g, k, v in PINNED}


def _broken(obj: dict[str, Any], change: str) -> dict[str, Any]:
    broken = copy.deepcopy(obj)
    spec = broken["spec"]
    if change == "unknown field":
        spec["containers"][0]["imagePullPolcy"] = "Always"
    elif change == "wrong type":
        spec["containers"][0]["ports"][0]["containerPort"] = "8080"
    elif change == "missing required":
        del spec["containers"][0]["name"]
    elif change == "integer out of range":
        spec["containers"][0]["ports"][0]["containerPort"] = 2**40
    return broken


@pytest.mark.parametrize(
    "change",
    ["unknown field", "wrong type", "missing required", "integer out of range"],
)
def test_the_validator_refuses_what_the_api_server_would(change: str) -> None:
    (runtime,) = the("kserve", "ServingRuntime")
    assert validate(runtime) == []
    assert validate(_broken(runtime, change)), change


def test_the_validator_refuses_a_value_outside_an_enum() -> None:
    monitor = the("monitoring", "PodMonitor")[1]
    assert validate(monitor) == []
    broken = copy.deepcopy(monitor)
    broken["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["action"] = "rewrite"
    (error,) = validate(broken)
    assert "'rewrite' is not one of" in error


def test_the_validator_is_strict_about_metadata_and_nested_unknown_fields() -> None:
    (monitor,) = [o for o in the("monitoring", "PodMonitor") if o["metadata"]["name"] == "mlserve"]
    broken = copy.deepcopy(monitor)
    broken["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["target_label"] = "pod"
    broken["metadata"]["uid"] = "x"
    errors = validate(broken)
    assert any("target_label: unknown field" in e for e in errors), errors
    assert any(".metadata.uid" in e for e in errors), errors


@pytest.mark.parametrize("folder", OPTIONAL)
def test_optional_kustomization_lists_its_manifests_and_builds(folder: str) -> None:
    (kustomization,) = load_yaml(K8S / folder / "kustomization.yaml")
    manifests = {p.name for p in (K8S / folder).glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests
    assert kustomization["namespace"] == "mlserve"
    result = run_tool(tool("kubectl"), "kustomize", K8S / folder)
    assert result.returncode == 0, result.stdout + result.stderr
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert len(built) == len(objects(folder))
    assert all(o["metadata"]["namespace"] == "mlserve" for o in built)


# ------------------------------------------------------------------------------ KServe
def runtime_container() -> dict[str, Any]:
    (runtime,) = the("kserve", "ServingRuntime")
    (container,) = runtime["spec"]["containers"]
    return dict(container)


def test_serving_runtime_offers_sklearn_over_v2() -> None:
    from mlserve.server.routes import v2

    (runtime,) = the("kserve", "ServingRuntime")
    spec = runtime["spec"]
    assert spec["protocolVersions"] == ["v2"]
    (fmt,) = spec["supportedModelFormats"]
    assert {k: fmt[k] for k in ("name", "version", "autoSelect")} == {
        "name": "sklearn",
        "version": "1",
        "autoSelect": True,
    }
    container = runtime_container()
    command = [*container["command"], *container["args"]]
    assert command[:3] == ["mlserve", "serve", "--model-path"]
    assert command[3].startswith("{{.Name}}=/mnt/models/")  # KServe's model folder
    assert command[command.index("--port") + 1] == "8080"
    assert "--allow-unauthenticated" not in command
    assert container["ports"][0]["containerPort"] == 8080
    assert {"secretRef": {"name": "mlserve-keys"}} in container["envFrom"]
    routes = {route.path for route in v2.router.routes}  # type: ignore[attr-defined]
    assert container["readinessProbe"]["httpGet"]["path"] in routes
    assert container["livenessProbe"]["httpGet"]["path"] in routes
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert spec["annotations"]["prometheus.kserve.io/port"] == "8080"
    # The image's user, non-root, read-only: as the base Deployment.
    security = container["securityContext"]
    assert security["runAsUser"] == 10001 and security["readOnlyRootFilesystem"] is True


def test_inference_service_uses_the_runtime() -> None:
    (runtime,) = the("kserve", "ServingRuntime")
    (service,) = the("kserve", "InferenceService")
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    formats = runtime["spec"]["supportedModelFormats"]
    assert any(
        f["name"] == model["modelFormat"]["name"]
        and f["version"] == model["modelFormat"]["version"]
        for f in formats
    )


def test_the_serving_runtime_command_serves_a_kserve_model_folder(tmp_path: Path) -> None:
    """The runtime's own command line, run for real, on a folder laid out as KServe's storage
    initializer leaves /mnt/models (model.joblib), with the probes and a V2 inference."""
    models = tmp_path / "mnt-models"
    models.mkdir()
    joblib.dump(iris_estimator(), models / "model.joblib")
    container = runtime_container()
    args = [
        a.replace("{{.Name}}", "iris").replace("/mnt/models", str(models))
        for a in container["args"]
    ]
    port = free_port()
    args[args.index("--port") + 1] = str(port)
    args[args.index("--host") + 1] = "127.0.0.1"  # the test binds loopback, not every address
    home = tmp_path / "home"
    home.mkdir()
    key = "mls_test-key-for-the-kserve-runtime"
    digest = hashlib.sha256(key.encode()).hexdigest()
    entries = [{"name": "kserve", "role": "predict", "sha256": digest}]
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    server = MlserveProcess.start(
        args,
        cwd=home,
        env=process_env(home, MLSERVE_AUTH__KEYS=json.dumps(entries), **env),
        name="kserve-runtime",
        url=f"http://127.0.0.1:{port}",
        registry=models,
    )
    try:
        server.wait_ready(path=container["readinessProbe"]["httpGet"]["path"])
        assert server.get(container["livenessProbe"]["httpGet"]["path"]).status_code == 200
        auth = {"Authorization": f"Bearer {key}"}
        assert server.get("/v2/models/iris", headers=auth).json()["name"] == "iris"
        body = {
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64",
                        "data": [5.1, 3.5, 1.4, 0.2]}]
        }  # fmt: skip
        refused = server.post("/v2/models/iris/infer", body)
        assert refused.status_code == 401  # auth stays on
        answer = server.post("/v2/models/iris/infer", body, headers=auth)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model_name"] == "iris"
    finally:
        assert server.stop() == 0, server.output


# ------------------------------------------------------------------------------ monitoring
def alert_jobs() -> set[str]:
    text = (PROMETHEUS / "alerts.yml").read_text(encoding="utf-8")
    return set(re.findall(r'job="([^"]+)"', text))


def test_server_pod_monitor_gives_the_job_the_alerts_and_dashboard_use() -> None:
    (monitor,) = [o for o in the("monitoring", "PodMonitor") if o["metadata"]["name"] == "mlserve"]
    deployment = k8s_object("Deployment", "mlserve")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    job = labels[spec["jobLabel"]]
    assert job == "mlserve"
    assert job in alert_jobs()
    dashboard = DASHBOARD.read_text(encoding="utf-8")
    assert f'job=\\"{job}\\"' in dashboard
    (endpoint,) = spec["podMetricsEndpoints"]
    (server,) = pod_spec(deployment)["containers"]
    assert endpoint["port"] in {p["name"] for p in server["ports"]}
    assert endpoint["path"] == "/metrics"
    assert not any(r.get("targetLabel") == "job" for r in endpoint.get("relabelings", []))


def test_worker_pod_monitor_relabels_the_job_the_dashboard_uses() -> None:
    (monitor,) = [
        o for o in the("monitoring", "PodMonitor") if o["metadata"]["name"] == "mlserve-worker"
    ]
    deployment = k8s_object("Deployment", "mlserve-worker")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = spec["podMetricsEndpoints"]
    (job,) = [r for r in endpoint["relabelings"] if r.get("targetLabel") == "job"]
    assert job["replacement"] == "mlserve-worker"
    assert "mlserve-worker" in DASHBOARD.read_text(encoding="utf-8")
    (worker,) = pod_spec(deployment)["containers"]
    assert endpoint["port"] in {p["name"] for p in worker["ports"]}
    # The two monitors never select the same pods.
    (server_monitor,) = [
        o for o in the("monitoring", "PodMonitor") if o["metadata"]["name"] == "mlserve"
    ]
    server_labels = k8s_object("Deployment", "mlserve")["spec"]["template"]["metadata"]["labels"]
    assert not spec["selector"]["matchLabels"].items() <= server_labels.items()
    assert not server_monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()


# ------------------------------------------------------------------------------ KEDA
def test_scaled_object_scales_the_servers_on_the_queue_in_place_of_the_cpu_hpa() -> None:
    (scaled,) = the("keda", "ScaledObject")
    hpa = k8s_object("HorizontalPodAutoscaler", "mlserve")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == hpa["spec"]["scaleTargetRef"]
    assert spec["minReplicaCount"] == hpa["spec"]["minReplicas"]
    assert spec["maxReplicaCount"] == hpa["spec"]["maxReplicas"]
    # One autoscaler per Deployment: KEDA takes the base's HPA over, under its name.
    assert (
        scaled["metadata"]["annotations"]["scaledobject.keda.sh/transfer-hpa-ownership"] == "true"
    )
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["name"] == hpa["metadata"]["name"]
    triggers = {t["type"]: t for t in spec["triggers"]}
    assert set(triggers) == {"prometheus", "cpu"}
    query = triggers["prometheus"]["metadata"]["query"]
    assert "mlserve_queue_depth" in query and 'job="mlserve"' in query
    assert float(triggers["prometheus"]["metadata"]["threshold"]) > 0
    cpu = hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"]
    assert triggers["cpu"]["metadata"]["value"] == str(cpu)


def test_scaled_object_query_is_valid_promql_on_an_exported_metric(tmp_path: Path) -> None:
    from mlserve.serving.metrics import ServerMetrics

    (scaled,) = the("keda", "ScaledObject")
    (trigger,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "prometheus"]
    query = trigger["metadata"]["query"]
    metrics = ServerMetrics()
    try:
        names = {m.name for m in metrics.registry.collect()}
    finally:
        metrics.close()
    assert "mlserve_queue_depth" in names
    rules = tmp_path / "keda_rules.yml"
    rules.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "keda", "rules": [{"record": "keda:q", "expr": query}]}]}
        )
    )
    result = run_tool(tool("promtool"), "check", "rules", rules)
    assert result.returncode == 0, result.stdout + result.stderr
