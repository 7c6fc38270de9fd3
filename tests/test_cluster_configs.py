"""The deployment configs of cluster/ say what they mean: TLS overlays that patch what they
intend, and a NetworkPolicy that admits the solve job (docs/security.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
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


# -- every config checked by the schema tools made for it (issue 23) --------------------------
#: Kubernetes release whose OpenAPI schemas (kubernetes-validate) the manifests must satisfy.
K8S_VERSION = "1.30.0"


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    """Every Kubernetes document under cluster/ (and the TLS overlay's patched ones), named."""
    found = [(f"{path.relative_to(ROOT)}:{d['kind']}", d)
             for path in sorted(ROOT.glob("cluster/**/*.yaml"))
             if path.name != "kustomization.yaml"
             for d in yaml.safe_load_all(path.read_text()) if d and "apiVersion" in d
             and "kind" in d]
    found += [(f"tls overlay:{name}", doc) for name, doc in _kustomized().items()]
    return found


def test_core_kubernetes_manifests_pass_kubernetes_validate() -> None:
    """Pods, Jobs, Services, volumes and NetworkPolicies against Kubernetes' own OpenAPI
    schemas, strict (an unknown or misspelt field fails)."""
    kv = pytest.importorskip("kubernetes_validate")
    core = [(name, d) for name, d in _manifests() if "/" not in d["apiVersion"]
            or d["apiVersion"].split("/")[0].endswith("k8s.io")
            or d["apiVersion"].split("/")[0] in ("batch", "apps")]
    assert {d["kind"] for _, d in core} >= {"PersistentVolumeClaim", "Job", "NetworkPolicy"}
    for name, doc in core:
        try:
            kv.validate(doc, K8S_VERSION, strict=True)
        except kv.ValidationError as exc:                       # pragma: no cover - message
            pytest.fail(f"{name}: {exc}")


def _pod_schema(kind: str) -> Any:
    """A jsonschema validator for a Kubernetes definition (``PodSpec``, ...) of
    :data:`K8S_VERSION`, strict, with its references resolved."""
    import jsonschema
    import kubernetes_validate
    from referencing import Registry, Resource

    base = (Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
            / f"v{K8S_VERSION}-local-strict")
    schema = yaml.safe_load((base / f"{kind.lower()}-v1.json").read_text())

    def retrieve(uri: str) -> Resource:                           # the schemas' own URLs
        return Resource.from_contents(yaml.safe_load((base / uri.rsplit("/", 1)[-1])
                                                     .read_text()))

    registry: Registry = Registry(retrieve=retrieve)            # type: ignore[call-arg]
    return jsonschema.Draft7Validator(schema, registry=registry)


def test_operator_resources_carry_valid_pod_specs() -> None:
    """The DaskCluster's and RayCluster's pod templates against Kubernetes' PodSpec and
    ServiceSpec. (The dask-operator's and KubeRay's CRD schemas are not on PyPI in a form CI
    can install: dask-kubernetes pins python-dateutil >= 3 against botocore's < 3, and KubeRay
    ships its CRDs only in its Helm chart; their top-level fields are checked by the tests
    above.)"""
    pytest.importorskip("kubernetes_validate")
    pod = _pod_schema("PodSpec")
    docs = dict((d["kind"], d) for _, d in _manifests())
    dask = docs["DaskCluster"]["spec"]
    ray = docs["RayCluster"]["spec"]
    specs = {"DaskCluster worker": dask["worker"]["spec"],
             "DaskCluster scheduler": dask["scheduler"]["spec"],
             "RayCluster head": ray["headGroupSpec"]["template"]["spec"]}
    specs.update({f"RayCluster worker {g['groupName']}": g["template"]["spec"]
                  for g in ray["workerGroupSpecs"]})
    for name, spec in specs.items():
        errors = sorted(pod.iter_errors(spec), key=str)
        assert not errors, f"{name}: {errors[0].message} at {list(errors[0].path)}"
    service = _pod_schema("ServiceSpec")
    assert not list(service.iter_errors(dask["scheduler"]["service"]))
    bad = dict(specs["DaskCluster worker"], containres=[])        # a misspelt field fails
    assert list(pod.iter_errors(bad))


def test_compose_files_pass_the_compose_spec() -> None:
    """docker-compose.yml and its TLS overlay against the compose-spec JSON schema (the copy
    check-jsonschema ships)."""
    import jsonschema

    cj = pytest.importorskip("check_jsonschema")
    spec = Path(cj.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = yaml.safe_load(spec.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    for path in sorted((ROOT / "cluster").glob("docker-compose*.yml")):
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert not errors, f"{path.name}: {errors[0].message}"
    assert list(validator.iter_errors({"services": {"x": {"imagee": "y"}}}))


def test_the_ray_launcher_config_passes_rays_validation() -> None:
    """cluster/ray/cluster.yaml through the cluster launcher's own schema check."""
    pytest.importorskip("ray")
    from ray.autoscaler._private.commands import prepare_config
    from ray.autoscaler._private.util import validate_config

    config = yaml.safe_load((ROOT / "cluster" / "ray" / "cluster.yaml").read_text())
    validate_config(prepare_config(config))                # as `ray up` does, defaults filled
    with pytest.raises(Exception, match="additionalProperties"):
        validate_config(prepare_config({**config, "max_workerz": 3}))
