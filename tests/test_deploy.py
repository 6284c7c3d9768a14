"""Deployment files (deploy/): they parse, agree with the server, and pass the tools' checks.

No container engine is needed. promtool (Debian's `prometheus` package), nginx and kubectl are
used when they are on PATH; their tests skip, saying so, when they are not.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import yaml

from mlserve.config import Settings, load_settings
from mlserve.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEPLOY = REPO_ROOT / "deploy"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "mlserve.json"

YAML_FILES = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
JSON_FILES = sorted(DEPLOY.rglob("*.json"))
METRIC_NAME = re.compile(r"\bmlserve_[a-z0-9_]+\b")
TOOL_TIMEOUT_S = 60
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what the deployed servers bind (auth required)

log = logging.getLogger(__name__)


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def load_yaml(path: Path) -> list[Any]:
    """Every document of a YAML file (empty documents dropped)."""
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def k8s_objects() -> list[dict[str, Any]]:
    """Every Kubernetes object in deploy/k8s (kustomization.yaml is kustomize's, not one)."""
    paths = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    return [doc for path in paths for doc in load_yaml(path)]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r} in deploy/k8s, found {len(found)}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def compose() -> dict[str, Any]:
    (doc,) = load_yaml(DEPLOY / "docker-compose.yml")
    return dict(doc)


def run_tool(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )


def tool(name: str) -> str:
    """The tool's path, or skip the test saying why and how to get it."""
    path = shutil.which(name)
    if path is None:
        hint = {
            "promtool": "apt-get install -y prometheus",
            "nginx": "apt-get install -y nginx-light",
            "kubectl": "install kubectl",
        }[name]
        pytest.skip(f"{name} is not on PATH ({hint}); this check needs it")
    return path


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title and refId, PromQL) of every query in the Grafana dashboard."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries.append((f"{panel['title']} [{target['refId']}]", target["expr"]))
    return queries


def alert_rules() -> list[dict[str, Any]]:
    (doc,) = load_yaml(PROMETHEUS / "alerts.yml")
    return [rule for group in doc["groups"] for rule in group["rules"]]


# ------------------------------------------------------------------------------ a live server
@pytest.fixture(scope="module")
def live_metrics(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The /metrics text of a real app over a tiny iris model, after a few predictions
    (single, batch, a cache hit and an invalid request)."""
    from fastapi.testclient import TestClient
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from mlserve.registry import Registry
    from mlserve.server.app import create_app

    root = tmp_path_factory.mktemp("deploy-metrics")
    iris = load_iris()
    estimator = LogisticRegression(max_iter=1000).fit(iris.data, iris.target_names[iris.target])
    registry = Registry(root / "registry")
    registry.register_estimator(
        estimator,
        name="iris",
        aliases=["production"],
        feature_names=["sepal_length", "sepal_width", "petal_length", "petal_width"],
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # no ./mlserve.toml from the outside
        for key in list(os.environ):
            if key.upper().startswith("MLSERVE_"):
                mp.delenv(key)
        settings = load_settings(
            None,
            home=str(root / "home"),
            registry={"path": str(registry.root)},
            cache={"enabled": True},
        )
        flowers = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
        with TestClient(create_app(settings)) as client:
            for row in [*flowers, flowers[0]]:  # the repeat is a cache hit
                assert client.post("/api/predict", json={"features": row}).status_code == 200
            assert client.post("/api/predict/batch", json={"records": flowers}).status_code == 200
            assert client.post("/api/predict", json={"features": [1.0]}).status_code == 422
            response = client.get("/metrics")
    assert response.status_code == 200
    return response.text


def exported_names(metrics_text: str) -> set[str]:
    """Series names a scrape can contain: each family, plus _bucket/_sum/_count of histograms."""
    names = set()
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "histogram":
                names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return names


# ------------------------------------------------------------------------------ parsing
def test_deploy_folder_has_the_expected_files() -> None:
    for name in (
        "Dockerfile",
        "docker-compose.yml",
        "README.md",
        "nginx/nginx.conf",
        "prometheus/prometheus.yml",
        "prometheus/alerts.yml",
        "prometheus/alerts_test.yml",
        "grafana/provisioning/datasources/prometheus.yml",
        "grafana/provisioning/dashboards/mlserve.yml",
        "grafana/dashboards/mlserve.json",
        "k8s/kustomization.yaml",
    ):
        assert (DEPLOY / name).is_file(), name


@pytest.mark.parametrize("path", YAML_FILES, ids=_rel)
def test_yaml_file_parses(path: Path) -> None:
    assert load_yaml(path), f"{_rel(path)} has no YAML document"


@pytest.mark.parametrize("path", JSON_FILES, ids=_rel)
def test_json_file_parses(path: Path) -> None:
    assert json.loads(path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------ Dockerfile
def dockerfile_instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    lines = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip()]


def test_dockerfile_runs_the_authenticated_server_as_non_root_with_a_healthcheck() -> None:
    instructions = dockerfile_instructions()
    body = "\n".join(instructions)

    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", body, re.M)
    assert "-r deploy/requirements.lock" in body  # with redis and jwt: tests/test_image_lock.py
    assert re.search(r"^USER 10001", body, re.M)
    assert re.search(r"^ENV .*MLSERVE_HOME=/data", body, re.M)
    assert 'VOLUME ["/data"]' in instructions
    assert "EXPOSE 8000" in instructions
    (healthcheck,) = [i for i in instructions if i.startswith("HEALTHCHECK ")]
    assert healthcheck.endswith(
        'CMD ["mlserve", "health-check", "--url", "http://127.0.0.1:8000", "--quiet"]'
    )
    assert instructions[-1] == 'CMD ["mlserve", "serve", "--host", "0.0.0.0", "--port", "8000"]'
    assert "--allow-unauthenticated" not in body


def test_dockerfile_copies_only_what_exists_and_the_dockerignore_lets_through() -> None:
    sources = [
        src
        for line in dockerfile_instructions()
        if line.startswith("COPY ") and "--from=" not in line
        for src in line.split()[1:-1]
    ]
    assert sources == [
        "deploy/requirements.lock",
        "deploy/build-requirements.lock",
        "pyproject.toml",
        "README.md",
        "LICENSE",  # pyproject's license-files
        "mlserve",
        "sample_models",
    ]
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    }
    for src in sources:
        assert (REPO_ROOT / src).exists(), src
        assert src in allowed, f"{src} is copied but excluded by .dockerignore"


def dockerfile_labels() -> dict[str, str]:
    labels: dict[str, str] = {}
    for line in dockerfile_instructions():
        if line.startswith("LABEL "):
            labels.update(re.findall(r'(\S+)="([^"]*)"', line))
    return labels


def test_dockerfile_labels_the_image_the_oci_way() -> None:
    from mlserve import __version__

    labels = dockerfile_labels()
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    assert labels["org.opencontainers.image.title"] == "mlserve"
    assert labels["org.opencontainers.image.description"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.source"] == "${SOURCE}"
    assert labels["org.opencontainers.image.revision"] == "${REVISION}"
    # VERSION defaults to the package's version in both stages, and the build stage checks
    # that the installed mlserve reports it (a wrong --build-arg VERSION fails the build).
    defaults = [line for line in dockerfile_instructions() if line.startswith("ARG VERSION=")]
    assert defaults == [f"ARG VERSION={__version__}"] * 2
    assert 'test "$(/opt/mlserve/bin/mlserve --version)" = "mlserve ${VERSION}"' in "\n".join(
        dockerfile_instructions()
    )


# ------------------------------------------------------------------------------ Compose
MLSERVE_IMAGE_SERVICES = ("init", "mlserve", "worker")


def test_compose_has_every_service_of_the_stack() -> None:
    services = compose()["services"]
    assert set(services) >= {"init", "mlserve", "worker", "redis", "prometheus", "grafana", "nginx"}
    assert services["mlserve"]["deploy"]["replicas"] == 2
    assert services["worker"]["command"][:2] == ["mlserve", "worker"]
    assert "mlserve train --sample sentiment" in " ".join(services["init"]["command"])


def test_compose_servers_require_auth_and_share_the_registry_and_redis() -> None:
    doc = compose()
    services = doc["services"]
    command = services["mlserve"]["command"]
    assert command[:2] == ["mlserve", "serve"]
    assert "--allow-unauthenticated" not in command
    assert command[command.index("--host") + 1] == ALL_INTERFACES
    for name in MLSERVE_IMAGE_SERVICES:
        service = services[name]
        assert "registry:/data" in service["volumes"], name
        assert service["environment"]["MLSERVE_REDIS__URL"].startswith("redis://redis:6379"), name
        assert "MLSERVE_AUTH__KEYS" in service["environment"], name
    assert "registry" in doc["volumes"]
    for name in ("mlserve", "worker"):
        depends = services[name]["depends_on"]
        assert depends["init"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
    # Only nginx is the way in; the replicas publish no host port.
    assert "ports" not in services["mlserve"]


def test_compose_bind_mounts_point_at_files_in_deploy() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"


def test_nginx_balances_over_the_mlserve_service_with_keepalive() -> None:
    conf = (DEPLOY / "nginx" / "nginx.conf").read_text(encoding="utf-8")
    upstream = re.search(r"upstream mlserve \{(.*?)\n    \}", conf, re.S)
    assert upstream, "no upstream mlserve block"
    block = upstream[1]
    # Re-resolved at run time (Docker's DNS: one A record per replica), idle connections kept.
    assert "server mlserve:8000 resolve;" in block
    assert re.search(r"^\s*zone mlserve \d+k;", block, re.M)
    assert re.search(r"^\s*keepalive \d+;", block, re.M)
    assert "resolver 127.0.0.11" in conf
    location = conf[conf.index("location / {") :]
    for directive in (
        "proxy_pass http://mlserve;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
    ):
        assert directive in location, directive


def test_replicas_trust_forwarded_addresses_from_nginx_only() -> None:
    doc = compose()
    nginx = doc["services"]["nginx"]
    image, _, tag = nginx["image"].partition(":")
    assert image == "nginx"
    version = tuple(int(part) for part in tag.split("-")[0].split("."))
    assert version >= (1, 27, 3), "the upstream's `server ... resolve` needs nginx 1.27.3"
    address = nginx["networks"]["default"]["ipv4_address"]
    (subnet,) = doc["networks"]["default"]["ipam"]["config"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet["subnet"])
    assert doc["services"]["mlserve"]["environment"]["FORWARDED_ALLOW_IPS"] == address


def test_prometheus_scrapes_every_replica_through_dns_discovery() -> None:
    (config,) = load_yaml(PROMETHEUS / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "mlserve"]
    assert job["dns_sd_configs"] == [
        {"names": ["mlserve"], "type": "A", "port": 8000, "refresh_interval": "15s"}
    ]
    assert job["metrics_path"] == "/metrics"
    assert config["rule_files"] == ["alerts.yml"]


def test_grafana_provisioning_matches_the_compose_mounts() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    (datasources,) = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
    (providers,) = load_yaml(DEPLOY / "grafana/provisioning/dashboards/mlserve.yml")
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./grafana/dashboards"] == providers["providers"][0]["options"]["path"]
    (source,) = datasources["datasources"]
    assert source["url"] == "http://prometheus:9090"
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert variable["current"]["value"] == source["uid"]


# ------------------------------------------------------------------------------ Kubernetes
def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = load_yaml(K8S / "kustomization.yaml")
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests
    assert kustomization["namespace"] == "mlserve"


def test_k8s_manifests_have_the_expected_kinds() -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in k8s_objects())
    assert kinds == sorted(
        [
            ("Namespace", "mlserve"),
            ("ConfigMap", "mlserve-config"),
            ("Secret", "mlserve-keys"),
            ("PersistentVolumeClaim", "mlserve-registry"),
            ("Job", "mlserve-init"),
            ("Deployment", "mlserve"),
            ("Service", "mlserve"),
            ("HorizontalPodAutoscaler", "mlserve"),
            ("PodDisruptionBudget", "mlserve"),
            ("Deployment", "mlserve-worker"),
            ("Deployment", "redis"),
            ("Service", "redis"),
        ]
    )


def test_server_deployment_probes_ready_and_live() -> None:
    deployment = k8s_object("Deployment", "mlserve")
    (server,) = pod_spec(deployment)["containers"]
    port = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert port == {"http": 8000}
    assert server["readinessProbe"]["httpGet"] == {"path": "/api/ready", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/api/live", "port": "http"}
    assert server["startupProbe"]["httpGet"]["path"] in ("/api/live", "/api/ready")
    assert server["args"][:1] == ["serve"] and "--allow-unauthenticated" not in server["args"]
    assert {"secretRef": {"name": "mlserve-keys"}} in server["envFrom"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8000"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_every_workload_runs_non_root_read_only_with_resources() -> None:
    workloads = [o for o in k8s_objects() if o["kind"] in ("Deployment", "Job")]
    assert len(workloads) == 4
    for workload in workloads:
        name = workload["metadata"]["name"]
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in containers(workload):
            where = f"{name}/{container['name']}"
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
            assert "memory" in container["resources"]["limits"], where


def test_mlserve_pods_share_the_registry_claim_and_the_settings() -> None:
    claim = k8s_object("PersistentVolumeClaim", "mlserve-registry")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for kind, name in (("Deployment", "mlserve"), ("Deployment", "mlserve-worker")):
        workload = k8s_object(kind, name)
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        assert volumes["registry"]["persistentVolumeClaim"]["claimName"] == "mlserve-registry"
        assert volumes["config"]["configMap"]["name"] == "mlserve-config"
        for container in containers(workload):
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/data"] == "registry"  # the image's MLSERVE_HOME
            assert mounts["/etc/mlserve"] == "config"
            assert {"name": "MLSERVE_CONFIG", "value": "/etc/mlserve/mlserve.toml"} in container[
                "env"
            ]
    (worker,) = pod_spec(k8s_object("Deployment", "mlserve-worker"))["containers"]
    assert [*worker["command"], *worker["args"]][:2] == ["mlserve", "worker"]


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


WORKER_METRICS_PORT = 9101


def test_workers_serve_metrics_that_prometheus_scrapes() -> None:
    command = compose()["services"]["worker"]["command"]
    assert int(flag(command, "--metrics-port")) == WORKER_METRICS_PORT
    assert flag(command, "--metrics-host") == ALL_INTERFACES  # reachable in the network
    (config,) = load_yaml(PROMETHEUS / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "mlserve-worker"]
    assert job["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": WORKER_METRICS_PORT, "refresh_interval": "15s"}
    ]
    assert job["metrics_path"] == "/metrics"

    deployment = k8s_object("Deployment", "mlserve-worker")
    (worker,) = pod_spec(deployment)["containers"]
    assert int(flag(worker["args"], "--metrics-port")) == WORKER_METRICS_PORT
    assert flag(worker["args"], "--metrics-host") == ALL_INTERFACES
    assert {p["name"]: p["containerPort"] for p in worker["ports"]} == {
        "metrics": WORKER_METRICS_PORT
    }
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(WORKER_METRICS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_service_and_autoscaler_target_the_server_pods() -> None:
    deployment = k8s_object("Deployment", "mlserve")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = k8s_object("Service", "mlserve")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    hpa = k8s_object("HorizontalPodAutoscaler", "mlserve")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "mlserve",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"


def test_configmap_settings_load(tmp_path: Path) -> None:
    text = k8s_object("ConfigMap", "mlserve-config")["data"]["mlserve.toml"]
    data = tomllib.loads(text)
    assert data["redis"]["url"] == "redis://redis:6379/0"
    if "redis" not in Settings.model_fields:
        del data["redis"]  # until the scale-out work adds the section, check the others
    path = tmp_path / "mlserve.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    settings = load_settings(path)
    assert settings.server.host == ALL_INTERFACES
    assert settings.server.port == 8000


def test_secret_holds_only_placeholders_that_the_server_refuses() -> None:
    secret = k8s_object("Secret", "mlserve-keys")
    entries = json.loads(secret["stringData"]["MLSERVE_AUTH__KEYS"])
    assert entries and all(set(e) == {"name", "role", "sha256"} for e in entries)
    assert all(e["sha256"].startswith("PLACEHOLDER") for e in entries)
    with pytest.raises(ConfigError, match="auth.keys.0.sha256"):
        load_settings(None, auth={"keys": entries})


# ------------------------------------------------------------------------------ metrics used
def test_dashboard_covers_the_required_views() -> None:
    exprs = "\n".join(expr for _, expr in dashboard_queries())
    for needle in (
        "rate(mlserve_http_requests_total",
        "histogram_quantile(0.99, sum by (le) (rate(mlserve_http_request_duration_seconds_bucket",
        "sum by (code) (rate(mlserve_errors_total",
        "mlserve_batch_size_bucket",
        "sum by (model, predicted_class) (rate(mlserve_predictions_total",
        "mlserve_cache_hits_total",
        "mlserve_cache_misses_total",
        'route="/api/predict/async"',
        'sum(rate(mlserve_jobs_submitted_total{job="mlserve"',
        'sum by (status) (rate(mlserve_jobs_finished_total{job=~"mlserve|mlserve-worker"',
        "rate(mlserve_job_rows_total{",
        "mlserve_jobs_running{",
        "histogram_quantile(0.95, sum by (model, le) (rate(mlserve_job_chunk_duration_seconds",
        "histogram_quantile(0.99, sum by (le, status) (rate(mlserve_http_request_duration_seconds",
        "(mlserve_build_info{",
        "(mlserve_model_info{",
    ):
        assert needle in exprs, needle


SERIES = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>[^}]*)\}$")


def test_alert_test_series_carry_the_labels_the_server_exports(live_metrics: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    exported: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(live_metrics):
        for sample in family.samples:
            exported.setdefault(sample.name, set()).update(sample.labels)
    (doc,) = load_yaml(PROMETHEUS / "alerts_test.yml")
    checked = 0
    for case in doc["tests"]:
        for series in case.get("input_series", []):
            match = SERIES.match(series["series"])
            assert match, series["series"]
            name = match["name"]
            if name not in exported:
                continue  # not in this scrape (no feedback or drift yet): nothing to compare
            labels = {part.split("=")[0].strip() for part in match["labels"].split(",")}
            assert labels - {"job", "instance"} == exported[name], series["series"]
            checked += 1
    assert checked


def test_live_metrics_follow_the_naming_conventions(live_metrics: str) -> None:
    names = exported_names(live_metrics)
    assert {"mlserve_build_info", "mlserve_model_info", "process_cpu_seconds_total"} <= names
    assert not [n for n in names if n.endswith(("_percent", "_created", "_accuracy"))]
    assert "_created" not in live_metrics


def test_dashboard_and_alerts_use_only_exported_metrics(live_metrics: str) -> None:
    exported = exported_names(live_metrics)
    used = {
        (where, name)
        for where, expr in [
            *dashboard_queries(),
            *((rule["alert"], rule["expr"]) for rule in alert_rules()),
        ]
        for name in METRIC_NAME.findall(expr)
    }
    assert used
    unknown = sorted((where, name) for where, name in used if name not in exported)
    assert not unknown, f"queries use metrics the server does not export: {unknown}"


# ------------------------------------------------------------------------------ promtool
def test_promtool_accepts_the_prometheus_config() -> None:
    result = run_tool(tool("promtool"), "check", "config", PROMETHEUS / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_alert_rules() -> None:
    result = run_tool(tool("promtool"), "check", "rules", PROMETHEUS / "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_fire_as_their_unit_tests_expect() -> None:
    result = run_tool(tool("promtool"), "test", "rules", PROMETHEUS / "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    promtool = tool("promtool")
    # Grafana's variables, as Grafana would expand them.
    expand = {"$__rate_interval": "5m", "$instance": ".*", "$route": ".*", "$model": ".*"}
    rules = []
    for i, (where, expr) in enumerate(dashboard_queries()):
        for variable, value in expand.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"{where}: unexpanded variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    result = run_tool(promtool, "check", "rules", path)

    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_a_live_metrics_response(live_metrics: str) -> None:
    promtool = tool("promtool")
    assert "mlserve_predictions_total{" in live_metrics

    result = run_tool(promtool, "check", "metrics", stdin=live_metrics)

    # Exit 0: the exposition is valid. Lint findings (naming conventions) are printed but not
    # fatal; they are logged (shown with the test's output) to be fixed in server/metrics.py.
    assert result.returncode == 0, result.stdout + result.stderr
    findings = (result.stdout + result.stderr).strip()
    if findings:
        log.warning("promtool check metrics lint findings:\n%s", findings)


# ------------------------------------------------------------------------------ other tools
def test_nginx_accepts_its_config(tmp_path: Path) -> None:
    """`nginx -t` on deploy/nginx/nginx.conf. An nginx older than 1.27.3 (Debian 12 has 1.22)
    knows no `resolve` on an upstream server: it checks the file with that one parameter
    dropped and the server at 127.0.0.1 (else it would resolve `mlserve` while checking)."""
    nginx = tool("nginx")
    conf = DEPLOY / "nginx" / "nginx.conf"
    version = run_tool(nginx, "-v")
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", version.stderr + version.stdout)
    assert found, version.stderr
    if tuple(map(int, found.groups())) < (1, 27, 3):
        text = conf.read_text(encoding="utf-8")
        assert "server mlserve:8000 resolve;" in text
        conf = tmp_path / "nginx.conf"
        conf.write_text(text.replace("server mlserve:8000 resolve;", "server 127.0.0.1:8000;"))
        log.warning("nginx %s: checked without the upstream's `resolve`", ".".join(found.groups()))
    result = run_tool(
        nginx,
        "-t",
        "-p",
        tmp_path,
        "-e",
        tmp_path / "error.log",
        "-c",
        conf,
        "-g",
        f"pid {tmp_path / 'nginx.pid'};",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_kustomize_builds_the_manifests() -> None:
    result = run_tool(tool("kubectl"), "kustomize", K8S)
    assert result.returncode == 0, result.stdout + result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert len(objects) == len(k8s_objects())
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "mlserve", obj["metadata"]["name"]
