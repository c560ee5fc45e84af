"""The Kubernetes manifests (infra/k8s) are valid objects, and agree with each other and with the app.

No cluster is needed. `kubectl --dry-run=client` still asks an API server for its schema
(offline it fails "failed to download openapi"), so the objects are checked against the
Kubernetes JSON schemas that the `kubernetes-validate` package ships (a dev dependency,
pinned in constraints.txt), in strict mode: an unknown or misspelt field fails too.

`kustomization.yaml` is rendered here the way kustomize does for the few features it uses
(resources, namespace, configMapGenerator and its labels, images); a feature this renderer does not know
fails the test instead of being skipped over. Then the invariants: the flow's entry point
derives the process id and the addresses list that `omni_ledger.config` accepts for every
pod of the StatefulSet, the settings file loads with the pods' environment, the command
lines parse, the ports agree with infra/prometheus/prometheus.yml, and every Secret,
ConfigMap, volume, image and label that one object names exists in another.

All are unit tests but the last, which runs promtool (integration: `make test` installs it).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from omni_ledger.cli import _parser
from omni_ledger.config import Settings, load_settings
from tests.prometheus_tools import PROMETHEUS_DIR, promtool

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "infra" / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
SECRETS_EXAMPLE = K8S / "secrets.example.yaml"
SCRAPE = K8S / "prometheus-scrape.yml"
SETTINGS_FILE = "omni-ledger.toml"
ENTRYPOINT = "flow-entrypoint.sh"
# Files in infra/k8s that are not resources of the kustomization, and why.
NOT_RESOURCES = {
    "kustomization.yaml": "the kustomization itself",
    "secrets.example.yaml": "the Secrets' shape; real ones are created by hand",
    "prometheus-scrape.yml": "Prometheus config, not a Kubernetes object",
    "omni-ledger.toml": "generated into a ConfigMap",
    "flow-entrypoint.sh": "generated into a ConfigMap",
    "Dockerfile": "the image",
    "README.md": "documentation",
}
# ConfigMaps the pods mount that the retailer creates (README.md, step 4).
EXTERNAL_CONFIGMAPS = {"omni-ledger-network"}
# The oldest Kubernetes the manifests are meant for, and the newest the package knows.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.utils.latest_version())
NAMESPACED_NOT = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding"}
FLOW_PORT, API_PORT = 9610, 9611  # as infra/prometheus/prometheus.yml lists them


# -- rendering


def _docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kustomization() -> dict[str, Any]:
    kustomization: dict[str, Any] = yaml.safe_load(KUSTOMIZATION.read_text())
    return kustomization


def _render() -> list[dict[str, Any]]:
    """`kubectl kustomize infra/k8s`, minus the generated names' hash suffixes."""
    k = _kustomization()
    known = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator", "generatorOptions", "images"}
    assert set(k) <= known, f"kustomization.yaml uses {set(k) - known}: teach _render() what it does"
    assert (k["apiVersion"], k["kind"]) == ("kustomize.config.k8s.io/v1beta1", "Kustomization")
    objects = [doc for name in k["resources"] for doc in _docs(K8S / name)]
    options = k.get("generatorOptions", {})
    assert set(options) <= {"labels"}, options
    for generator in k.get("configMapGenerator", []):
        assert set(generator) == {"name", "files"}, generator
        data = {Path(f).name: (K8S / f).read_text() for f in generator["files"]}
        metadata = {"name": generator["name"], "labels": dict(options.get("labels", {}))}
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data})
    namespace = k["namespace"]
    for obj in objects:
        if obj["kind"] == "Namespace":
            obj["metadata"]["name"] = namespace
        elif obj["kind"] not in NAMESPACED_NOT:
            obj["metadata"]["namespace"] = namespace
    images = {image["name"]: image for image in k.get("images", [])}
    for container in (c for obj in objects for c in _containers(obj)):
        name, _, _tag = container["image"].partition(":")
        if name in images:
            new = images[name]
            container["image"] = f"{new.get('newName', name)}:{new['newTag']}"
    return objects


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def _one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return _render()


@pytest.fixture(scope="module")
def flow(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(objects, "StatefulSet")


@pytest.fixture(scope="module")
def api(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(objects, "Deployment")


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


def _secret_values() -> dict[tuple[str, str], str]:
    return {
        (secret["metadata"]["name"], key): value
        for secret in _docs(SECRETS_EXAMPLE)
        for key, value in secret["stringData"].items()
    }


def _environment(container: dict[str, Any], pod_name: str) -> dict[str, str]:
    """The container's environment as the kubelet sets it (Secrets from secrets.example.yaml)."""
    secrets = _secret_values()
    out = {}
    for name, entry in _env(container).items():
        if "value" in entry:
            out[name] = entry["value"]
        elif "secretKeyRef" in entry["valueFrom"]:
            ref = entry["valueFrom"]["secretKeyRef"]
            out[name] = secrets[(ref["name"], ref["key"])]
        else:
            assert entry["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", entry
            out[name] = pod_name
    return out


def _settings_path(container: dict[str, Any]) -> str:
    args = container["args"]
    return str(args[args.index("--config") + 1])


def _settings(container: dict[str, Any], environ: dict[str, str]) -> Settings:
    """The settings the container's command loads: the ConfigMap's file, then its environment."""
    path = _settings_path(container)
    assert Path(path).name == SETTINGS_FILE
    return load_settings(K8S / SETTINGS_FILE, environ=environ)


def _mount(container: dict[str, Any], volume: str) -> dict[str, Any]:
    mounts = [m for m in container["volumeMounts"] if m["name"] == volume]
    assert len(mounts) == 1, f"{container['name']} mounts volume {volume} {len(mounts)} times"
    return mounts[0]


def _volumes(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in obj["spec"]["template"]["spec"]["volumes"]}


def _selects(service: dict[str, Any], workload: dict[str, Any]) -> bool:
    return bool(service["spec"]["selector"].items() <= workload["spec"]["template"]["metadata"]["labels"].items())


def _port(container: dict[str, Any], name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    return int(ports[name])


# -- the files and the schema


@pytest.mark.unit
def test_every_file_in_infra_k8s_is_a_resource_or_said_why_not():
    k = _kustomization()
    listed = set(k["resources"])
    generated = {Path(f).name for g in k["configMapGenerator"] for f in g["files"]}
    present = {p.name for p in K8S.iterdir() if p.is_file()}
    assert listed.isdisjoint(NOT_RESOURCES)
    assert present == listed | set(NOT_RESOURCES), "a new file in infra/k8s: list it in kustomization.yaml or here"
    assert generated == {SETTINGS_FILE, ENTRYPOINT}


@pytest.mark.unit
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_against_the_kubernetes_schema(objects, version):
    for obj in [*objects, *_docs(SECRETS_EXAMPLE)]:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{where} is not a valid Kubernetes {version} object: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{where}: {exc.message}")


@pytest.mark.unit
def test_the_objects_are_the_expected_set_and_all_in_one_namespace(objects):
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    assert kinds == [
        ("ConfigMap", "omni-ledger-config"),
        ("ConfigMap", "omni-ledger-flow-entrypoint"),
        ("Deployment", "omni-ledger-api"),
        ("Namespace", "omni-ledger"),
        ("PersistentVolumeClaim", "omni-ledger-data"),
        ("PodDisruptionBudget", "omni-ledger-api"),
        ("PodDisruptionBudget", "omni-ledger-flow"),
        ("Service", "omni-ledger-api"),
        ("Service", "omni-ledger-api-metrics"),
        ("Service", "omni-ledger-flow-peers"),
        ("StatefulSet", "omni-ledger-flow"),
    ]
    namespace = _kustomization()["namespace"]
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {namespace}
    assert {s["metadata"]["namespace"] for s in _docs(SECRETS_EXAMPLE)} == {namespace}


# -- the flow: a Bytewax cluster


@pytest.mark.unit
def test_the_flow_is_a_parallel_statefulset_behind_a_headless_service(objects, flow):
    spec = flow["spec"]
    # A Bytewax cluster starts, fails and resumes as a whole: no pod waits for another.
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"]["type"] == "OnDelete"
    peers = _one(objects, "Service", spec["serviceName"])
    assert peers["spec"]["clusterIP"] == "None"
    assert peers["spec"]["publishNotReadyAddresses"] is True
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    assert peers["spec"]["selector"].items() <= pod_labels.items()
    (container,) = spec["template"]["spec"]["containers"]
    env = _environment(container, "omni-ledger-flow-0")
    assert int(env["CLUSTER_SIZE"]) == spec["replicas"], "CLUSTER_SIZE must equal the StatefulSet's replicas"
    assert env["CLUSTER_SERVICE"] == spec["serviceName"]
    service_ports = {p["name"]: p for p in peers["spec"]["ports"]}
    assert int(env["CLUSTER_PORT"]) == _port(container, "bytewax") == service_ports["bytewax"]["port"]
    assert service_ports["bytewax"]["targetPort"] == "bytewax"


def _run_entrypoint(tmp_path: Path, environ: dict[str, str], args: list[str]) -> subprocess.CompletedProcess[str]:
    """flow-entrypoint.sh under /bin/sh, with a stand-in `omni-ledger` that prints what it got."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "omni-ledger"
    report = "print(json.dumps({'env': dict(os.environ), 'args': sys.argv[1:]}))"
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n{report}\n")
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin", **environ}
    return subprocess.run(
        ["/bin/sh", str(K8S / ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def _pod_names(flow: dict[str, Any]) -> Iterator[tuple[int, str]]:
    for ordinal in range(flow["spec"]["replicas"]):
        yield ordinal, f"{flow['metadata']['name']}-{ordinal}"


@pytest.mark.unit
def test_each_flow_pod_gets_its_process_id_and_every_peer_address(tmp_path, flow):
    spec = flow["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    assert container["command"] == ["/bin/sh", f"/opt/omni-ledger/bin/{ENTRYPOINT}"]
    assert _mount(container, "entrypoint")["mountPath"] == "/opt/omni-ledger/bin"
    replicas = spec["replicas"]
    expected = tuple(f"{flow['metadata']['name']}-{i}.{spec['serviceName']}:2101" for i in range(replicas))
    for ordinal, pod in _pod_names(flow):
        environ = {**_environment(container, pod), "CLUSTER_DNS_WAIT": "0"}
        result = _run_entrypoint(tmp_path, environ, container["args"])
        assert result.returncode == 0, result.stderr
        seen = json.loads(result.stdout)
        assert seen["args"] == container["args"]
        assert seen["env"]["OMNI_LEDGER_RUNTIME_PROCESS_ID"] == str(ordinal)
        assert seen["env"]["OMNI_LEDGER_SNAPSHOTS_WRITERS"] == str(replicas)
        # What the process will run with: the ConfigMap's file, then this environment.
        app_env = {k: v for k, v in seen["env"].items() if k.startswith(("OMNI_LEDGER_", "PG"))}
        settings = _settings(container, app_env)
        assert settings.process_id == ordinal
        assert settings.addresses == expected
        assert settings.snapshot_writers == replicas


@pytest.mark.unit
def test_the_entrypoint_refuses_a_pod_name_without_an_ordinal_in_range(tmp_path, flow):
    (container,) = flow["spec"]["template"]["spec"]["containers"]
    replicas = flow["spec"]["replicas"]
    for pod, message in (
        ("omni-ledger-flow", "cannot read a process id"),
        (f"omni-ledger-flow-{replicas}", "set CLUSTER_SIZE to the StatefulSet's replicas"),
    ):
        environ = {**_environment(container, pod), "CLUSTER_DNS_WAIT": "0"}
        result = _run_entrypoint(tmp_path, environ, ["run"])
        assert result.returncode == 2, result.stdout
        assert message in result.stderr


@pytest.mark.unit
def test_the_flow_runs_kafka_into_the_postgres_catalog_on_the_shared_volume(objects, flow):
    (container,) = flow["spec"]["template"]["spec"]["containers"]
    environ = {
        **_environment(container, "omni-ledger-flow-0"),
        "OMNI_LEDGER_RUNTIME_PROCESS_ID": "0",
        "OMNI_LEDGER_RUNTIME_ADDRESSES": "omni-ledger-flow-0.omni-ledger-flow-peers:2101",
    }
    args = _parser().parse_args(container["args"])
    assert (args.command, args.source) == ("run", "kafka")
    assert str(args.config) == _settings_path(container)
    assert _mount(container, "config")["mountPath"] == str(Path(_settings_path(container)).parent)
    assert _volumes(flow)["config"]["configMap"]["name"] == "omni-ledger-config"
    assert _volumes(flow)["entrypoint"]["configMap"]["name"] == "omni-ledger-flow-entrypoint"
    settings = _settings(container, environ)
    assert settings.snapshot_catalog.startswith("postgres:")
    assert "password" not in settings.snapshot_catalog, "the catalog's password comes from the Secret (PGPASSWORD)"
    assert {"PGUSER", "PGPASSWORD"} <= environ.keys()
    assert settings.recovery
    assert settings.workers == 1, "one worker per process: scale with processes (docs/scaling.md)"
    # Snapshots and recovery (snapshots.dir/recovery) on the shared ReadWriteMany volume.
    data = _mount(container, "data")
    assert Path(data["mountPath"]) == settings.snapshot_dir
    assert not data.get("readOnly", False)
    claim = _volumes(flow)["data"]["persistentVolumeClaim"]["claimName"]
    assert _one(objects, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]
    # Kafka: SASL, the password from the Secret.
    kafka = settings.kafka
    assert kafka.security_protocol.startswith("SASL")
    assert kafka.sasl_password.reveal() == _secret_values()[("omni-ledger-kafka", "sasl-password")]
    assert settings.kafka.partitions >= flow["spec"]["replicas"] * settings.workers


@pytest.mark.unit
def test_the_flow_pdb_lets_one_process_go_at_a_time(objects, flow):
    pdb = _one(objects, "PodDisruptionBudget", "omni-ledger-flow")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= flow["spec"]["template"]["metadata"]["labels"].items()


# -- the API


@pytest.mark.unit
def test_the_api_serves_the_settings_port_with_health_probes(objects, api):
    (container,) = api["spec"]["template"]["spec"]["containers"]
    environ = _environment(container, "omni-ledger-api-x")
    args = _parser().parse_args(container["args"])
    assert args.command == "serve"
    settings = _settings(container, environ)
    assert settings.serve.host == "0.0.0.0"
    assert _port(container, "http") == settings.serve.port
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["livenessProbe"]["httpGet"]["port"] == "http"
    assert settings.serve.bus == "kafka", "replicas share no inbox file: confirms go through Kafka"
    assert settings.serve.write_tokens, "the write tokens come from the Secret"
    assert settings.snapshot_catalog.startswith("postgres:")
    # The network file comes from its ConfigMap, the snapshots from the shared volume (read only).
    network = _mount(container, "network")
    assert settings.serve.network.parent == Path(network["mountPath"])
    assert _volumes(api)["network"]["configMap"]["name"] in EXTERNAL_CONFIGMAPS
    data = _mount(container, "data")
    assert Path(data["mountPath"]) == settings.snapshot_dir
    assert data["readOnly"] is True
    assert _volumes(api)["data"]["persistentVolumeClaim"]["claimName"] == "omni-ledger-data"
    service = _one(objects, "Service", "omni-ledger-api")
    pod_labels = api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http"}
    pdb = _one(objects, "PodDisruptionBudget", "omni-ledger-api")
    assert pdb["spec"]["minAvailable"] < api["spec"]["replicas"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


# -- what the objects share


@pytest.mark.unit
def test_every_secret_and_configmap_a_pod_names_exists(objects):
    secrets = _secret_values()
    configmaps = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"} | EXTERNAL_CONFIGMAPS
    claims = {o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim"}
    for workload in (o for o in objects if _containers(o)):
        for volume in _volumes(workload).values():
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, volume
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, volume
        for container in _containers(workload):
            for entry in _env(container).values():
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None:
                    assert (ref["name"], ref["key"]) in secrets, f"{ref} is not in secrets.example.yaml"
            assert {m["name"] for m in container["volumeMounts"]} <= _volumes(workload).keys()


@pytest.mark.unit
def test_the_example_secrets_would_pass_the_settings_checks(api):
    (container,) = api["spec"]["template"]["spec"]["containers"]
    settings = _settings(container, _environment(container, "omni-ledger-api-x"))
    tokens = [t.reveal() for t in (*settings.serve.write_tokens, *settings.serve.read_tokens)]
    assert tokens
    assert all("CHANGE-ME" in t for t in tokens), "secrets.example.yaml holds placeholders only"


@pytest.mark.unit
def test_every_container_has_one_image_resources_and_runs_as_the_image_user(objects):
    dockerfile = (K8S / "Dockerfile").read_text()
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    assert user is not None
    k = _kustomization()
    (image,) = k["images"]
    images = set()
    for workload in (o for o in objects if _containers(o)):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == int(user.group(1))
        assert pod["securityContext"]["runAsGroup"] == int(user.group(2))
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in _containers(workload):
            images.add(container["image"])
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= container["resources"][kind].keys(), container["name"]
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert _mount(container, "tmp")["mountPath"] == "/tmp"
    assert images == {f"{image['name']}:{image['newTag']}"}


@pytest.mark.unit
def test_the_dockerfile_copies_what_exists_and_installs_with_the_constraints():
    dockerfile = (K8S / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            *sources, _dest = shlex.split(line)[1:]
            for source in sources:
                assert (REPO / source).exists(), line
    assert "pip install -c constraints.txt -e ." in dockerfile
    copied = {shlex.split(line)[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert {package.split(".")[0] for package in packages} <= copied  # a subpackage comes with its parent
    assert "schemas" in copied, "the Avro schemas are read from the source tree"


@pytest.mark.unit
def test_every_object_carries_the_app_label(objects):
    for obj in [*objects, *_docs(SECRETS_EXAMPLE)]:
        assert obj["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "omni-ledger", obj["metadata"]


# -- Prometheus


def _prometheus_jobs(path: Path) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in yaml.safe_load(path.read_text())["scrape_configs"]}


@pytest.mark.unit
def test_the_metrics_ports_are_the_ones_prometheus_scrapes(objects, flow, api):
    jobs = _prometheus_jobs(PROMETHEUS_DIR / "prometheus.yml")
    ports = {
        name: {int(t.rpartition(":")[2]) for c in job["static_configs"] for t in c["targets"]}
        for name, job in jobs.items()
    }
    assert ports == {"omni-ledger-flow": {FLOW_PORT}, "omni-ledger-api": {API_PORT}}
    for workload, job, port in ((flow, "omni-ledger-flow", FLOW_PORT), (api, "omni-ledger-api", API_PORT)):
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == port, job
        assert annotations["prometheus.io/path"] == "/metrics"
        assert _port(container, "metrics") == port
        assert _parser().parse_args(container["args"]).metrics_port == port
        settings = _settings(container, _environment(container, f"{workload['metadata']['name']}-0"))
        assert settings.metrics.host == "0.0.0.0", "scraped from another pod"


@pytest.mark.unit
def test_the_cluster_scrape_config_keeps_the_job_names_and_finds_every_pod(objects):
    ours = _prometheus_jobs(PROMETHEUS_DIR / "prometheus.yml")
    cluster = _prometheus_jobs(SCRAPE)
    assert cluster.keys() == ours.keys(), "the recording rules and the dashboard select by these job names"
    local = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert yaml.safe_load(SCRAPE.read_text())["rule_files"] == local["rule_files"]
    namespace = _kustomization()["namespace"]
    workloads = {"omni-ledger-flow": ("StatefulSet", FLOW_PORT), "omni-ledger-api": ("Deployment", API_PORT)}
    for name, job in cluster.items():
        (sd,) = job["dns_sd_configs"]
        assert sd["type"] == "SRV"
        (record,) = sd["names"]
        match = re.fullmatch(r"_(?P<port>[a-z0-9-]+)\._tcp\.(?P<service>[a-z0-9-]+)\.(?P<ns>[a-z0-9-]+)\.svc", record)
        assert match is not None, record
        assert match["ns"] == namespace
        service = _one(objects, "Service", match["service"])
        # Headless, every pod (ready or not: a stale API is still scraped), the port named `metrics`.
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["publishNotReadyAddresses"] is True
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        kind, port = workloads[name]
        assert match["port"] == "metrics"
        assert ports["metrics"]["port"] == port
        assert ports["metrics"]["targetPort"] == "metrics"
        selected = [o["kind"] for o in objects if _containers(o) and _selects(service, o)]
        assert selected == [kind], f"{record} must reach the {kind}'s pods only"


@pytest.mark.integration
def test_promtool_accepts_the_cluster_scrape_config(tmp_path):
    # rule_files are relative to the config: lay it out as the header says, beside the rules.
    (tmp_path / "rules").mkdir()
    for rule_file in (PROMETHEUS_DIR / "rules").iterdir():
        (tmp_path / "rules" / rule_file.name).write_text(rule_file.read_text())
    config = tmp_path / SCRAPE.name
    config.write_text(SCRAPE.read_text())
    result = promtool("check", "config", str(config))
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
