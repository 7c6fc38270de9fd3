"""The deployment configs of cluster/ say what they mean: TLS overlays that patch what they
intend, and a NetworkPolicy that admits the solve job (docs/security.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "cluster" / "kubernetes"
TLS_FLAGS = ["--tls-ca-file", "/certs/ca.pem", "--tls-cert", "/certs/node.pem",
             "--tls-key", "/certs/node.pem"]
#: The dask.config keys bigsink's client reads for TLS (tested against a real TLS
#: scheduler in tests/executors/test_executor_dask.py), as environment variables.
CLIENT_ENV = {"DASK_DISTRIBUTED__COMM__TLS__CA_FILE", "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT",
              "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY"}


def _patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """Apply JSON-patch ``add``/``replace`` operations (RFC 6902) as kustomize does."""
    for op in ops:
        *parents, last = op["path"].strip("/").split("/")
        node = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            assert op["op"] == "replace" or last == "-", op
            if last == "-":
                node.append(op["value"])
            else:
                node[int(last)] = op["value"]
        else:
            assert op["op"] == "add" or last in node, f"{op['path']} is not there to replace"
            node[last] = op["value"]
    return doc


def _kustomized() -> dict[str, Any]:
    """The resources of cluster/kubernetes/tls by kind, with its patches applied."""
    kust = yaml.safe_load((K8S / "tls" / "kustomization.yaml").read_text())
    docs = [d for res in kust["resources"]
            for d in yaml.safe_load_all((K8S / "tls" / res).resolve().read_text()) if d]
    for patch in kust["patches"]:
        target = patch["target"]
        [doc] = [d for d in docs if d["kind"] == target["kind"]
                 and d["metadata"]["name"] == target["name"]]
        _patch(doc, yaml.safe_load(patch["patch"]))
    return {d["kind"] + "/" + d["metadata"]["name"]: d for d in docs}


def test_the_kubernetes_tls_overlay_speaks_tls_everywhere() -> None:
    res = _kustomized()
    cluster = res["DaskCluster/bigsink"]["spec"]
    scheduler = cluster["scheduler"]["spec"]["containers"][0]
    worker = cluster["worker"]["spec"]["containers"][0]
    assert scheduler["args"][:4] == ["dask", "scheduler", "--protocol", "tls"]
    for container in (scheduler, worker):
        assert container["args"][-6:] == TLS_FLAGS
        assert {"name": "tls", "mountPath": "/certs", "readOnly": True} in container["volumeMounts"]
    job = res["Job/bigsink-solve"]["spec"]["template"]
    args = job["spec"]["containers"][0]["args"]
    assert args[args.index("--scheduler") + 1] == "tls://bigsink-scheduler:8786"
    env = {e["name"] for e in job["spec"]["containers"][0]["env"]}
    assert CLIENT_ENV <= env


def test_the_network_policy_admits_the_job_and_the_cluster_only() -> None:
    res = _kustomized()
    job_labels = res["Job/bigsink-solve"]["spec"]["template"]["metadata"]["labels"]
    for name in ("bigsink-scheduler", "bigsink-workers"):
        rule = res[f"NetworkPolicy/{name}"]["spec"]["ingress"][0]["from"]
        allowed = [src["podSelector"]["matchLabels"] for src in rule]
        assert {"dask.org/cluster-name": "bigsink"} in allowed
        assert any(all(job_labels.get(k) == v for k, v in sel.items()) for sel in allowed)


def test_the_compose_tls_overlay_matches_the_base_services() -> None:
    base = yaml.safe_load((ROOT / "cluster" / "docker-compose.yml").read_text())["services"]
    tls = yaml.safe_load((ROOT / "cluster" / "docker-compose.tls.yml").read_text())["services"]
    assert set(tls) <= set(base)
    assert tls["scheduler"]["command"][:4] == ["dask", "scheduler", "--protocol", "tls"]
    assert tls["worker"]["command"][2] == "tls://scheduler:8786"
    for name in ("scheduler", "worker"):
        assert tls[name]["command"][-6:] == TLS_FLAGS
    assert CLIENT_ENV <= set(tls["client"]["environment"])


def _commands(doc: Any) -> list[str]:
    """Every command and argument string in a YAML document."""
    if isinstance(doc, dict):
        return [c for v in doc.values() for c in _commands(v)]
    if isinstance(doc, list):
        return [c for v in doc for c in _commands(v)]
    return [doc] if isinstance(doc, str) else []


def test_no_deployment_installs_bigsink_from_a_package_index() -> None:
    """issue 23 (item 1): bigsink is on no index; every config installs this checkout (the
    image of cluster/Dockerfile, or `make dist`'s wheel)."""
    for path in sorted((ROOT / "cluster").rglob("*")):
        if path.suffix in (".yaml", ".yml", ".py", ".sh", ".md") or path.name == "Dockerfile":
            text = path.read_text()
            for bad in ("install bigsink", "install 'bigsink", 'install "bigsink'):
                assert bad not in text, f"{path}: {bad}"


def test_kuberay_runs_the_image_and_its_own_start_command() -> None:
    """issue 23: without the overwrite-container-cmd annotation KubeRay wrapped the command,
    pip ran without arguments and Ray started without bigsink."""
    cluster = yaml.safe_load((ROOT / "cluster" / "ray" / "raycluster.yaml").read_text())
    assert cluster["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    for group in groups:
        [container] = group["template"]["spec"]["containers"]
        assert container["image"].startswith("bigsink:")
        assert container["args"] == ["ulimit -n 65536 && $KUBERAY_GEN_RAY_START_CMD"]
    launcher = yaml.safe_load((ROOT / "cluster" / "ray" / "cluster.yaml").read_text())
    assert launcher["file_mounts"]["~/bigsink-dist"] == "./dist"
    assert any("bigsink-dist/bigsink-*.whl" in c for c in _commands(launcher["setup_commands"]))
