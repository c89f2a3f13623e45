"""The chart as files: lint, schema-valid output, RBAC without wildcards, and the CRDs and
runtimes it carries equal to the generated ones."""

from __future__ import annotations

import pathlib
import subprocess
from typing import Any

import pytest
import yaml

from kubeinfer.core import builders, router
from tests.integration.helm.conftest import CHART, CI_VALUES, Helm
from tests.operator_process import REPO

# Rendered only with values that switch them on; the local cluster has no prometheus-operator
# CRDs to take their schemas from, so kubeconform skips these kinds by name (nothing else).
MONITORING_KINDS = "ServiceMonitor,PodMonitor,PrometheusRule"
VALUE_SETS = [pytest.param([], id="defaults")] + [
    pytest.param(["-f", str(path)], id=path.stem) for path in CI_VALUES
]


@pytest.mark.parametrize("values", VALUE_SETS)
def test_lint_strict(helm_offline: Helm, values: list[str]) -> None:
    out = helm_offline("lint", "--strict", str(CHART), *values)
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout, out.stdout


def test_values_schema_rejects_mistakes(helm_offline: Helm) -> None:
    for bad in ("replicas=2", "watchNamespaces[0]=Not_A_Namespace", "crds.instal=true"):
        proc = helm_offline("template", "x", str(CHART), "--set", bad, check=False)
        assert proc.returncode != 0 and "schema" in proc.stderr, (bad, proc.stderr)


@pytest.mark.parametrize("values", VALUE_SETS)
def test_template_validates_against_cluster_and_crd_schemas(
    helm_offline: Helm,
    kubeconform: pathlib.Path,
    schema_dir: pathlib.Path,
    values: list[str],
    tmp_path: pathlib.Path,
) -> None:
    rendered = helm_offline("template", "kubeinfer", str(CHART), "--include-crds", *values).stdout
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(rendered)
    proc = subprocess.run(
        [
            str(kubeconform),
            "-strict",
            "-summary",
            "-output",
            "text",
            "-schema-location",
            f"{schema_dir}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
            "-skip",
            MONITORING_KINDS,
            str(manifest),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Invalid: 0, Errors: 0" in proc.stdout, proc.stdout
    assert "Valid: 0," not in proc.stdout, proc.stdout
    assert "kind: CustomResourceDefinition" in rendered


def _kinds(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        out.setdefault(doc["kind"], []).append(doc)
    return out


@pytest.mark.parametrize(
    "values",
    [[], ["-f", str(CHART / "ci" / "namespaced.yaml")]],
    ids=["cluster-wide", "namespaced"],
)
def test_rbac_has_no_wildcards(helm_offline: Helm, values: list[str]) -> None:
    docs = _kinds(helm_offline.template(*values))
    for role in docs.get("ClusterRole", []) + docs.get("Role", []):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)
            assert not rule.get("nonResourceURLs"), rule
            # No access to Secrets at all: a missing credentialsSecret shows in the pod's
            # own status, which the operator reads.
            assert "secrets" not in rule["resources"], rule
            assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(
                rule["verbs"]
            ), rule


@pytest.mark.parametrize(
    "values",
    [[], ["-f", str(CHART / "ci" / "namespaced.yaml")]],
    ids=["cluster-wide", "namespaced"],
)
def test_rbac_lets_the_autoscaler_mark_pods_and_no_more(
    helm_offline: Helm, values: list[str]
) -> None:
    """A scale-in patches the pods it removes (pod-deletion-cost, the router's draining mark);
    the Deployment controller alone creates and deletes them."""
    docs = _kinds(helm_offline.template(*values))
    roles = docs.get("Role", []) if values else docs["ClusterRole"]
    assert roles
    for role in roles:
        verbs = {
            v
            for rule in role["rules"]
            if "pods" in rule["resources"] and "" in rule["apiGroups"]
            for v in rule["verbs"]
        }
        assert verbs == {"get", "list", "watch", "patch"}, (role["metadata"]["name"], verbs)


@pytest.mark.parametrize(
    "values",
    [[], ["-f", str(CHART / "ci" / "namespaced.yaml")]],
    ids=["cluster-wide", "namespaced"],
)
def test_the_operator_holds_everything_it_grants_the_router(
    helm_offline: Helm, values: list[str]
) -> None:
    """RBAC's escalation rule: the operator may create the router's Role (core/router.py)
    only when it holds every verb of it itself, so a rule added there needs one here."""
    docs = _kinds(helm_offline.template(*values))
    roles = docs.get("Role", []) if values else docs["ClusterRole"]
    assert roles
    wanted = router.build_role(builders.Owner(name="m", namespace="ns", uid="u"))["rules"]
    for role in roles:
        # A rule with resourceNames covers only those names: count the unrestricted ones.
        held = {
            (group, resource, verb)
            for rule in role["rules"]
            if not rule.get("resourceNames")
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }
        missing = [
            (group, resource, verb)
            for rule in wanted
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
            if (group, resource, verb) not in held
        ]
        assert not missing, (role["metadata"]["name"], missing)


def test_namespaced_mode_keeps_namespaced_rules_out_of_the_cluster_role(
    helm_offline: Helm,
) -> None:
    docs = _kinds(helm_offline.template("--set", "watchNamespaces={team-a,team-b}"))
    (cluster_role,) = docs["ClusterRole"]
    resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    assert resources == {"inferenceruntimes", "customresourcedefinitions", "namespaces"}
    assert {r["metadata"]["namespace"] for r in docs["Role"]} == {"team-a", "team-b"}
    assert {r["metadata"]["namespace"] for r in docs["RoleBinding"]} == {"team-a", "team-b"}
    args = docs["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args


def test_operator_deployment_shape(helm_offline: Helm) -> None:
    (dep,) = _kinds(helm_offline.template())["Deployment"]
    spec = dep["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    container = spec["template"]["spec"]["containers"][0]
    assert container["args"][:3] == [
        "operator",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--metrics-port=8081",
    ]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    version = (REPO / "VERSION").read_text().strip()
    assert container["image"] == f"ghcr.io/kubeinfer/operator:{version}"
    # Serving pods' storage initializer is the operator's own image by default.
    assert f"--init-image={container['image']}" in container["args"]


def test_init_image_and_pull_secrets_reach_the_operator(helm_offline: Helm) -> None:
    """Air-gapped clusters: the chart's image settings and pull secrets reach serving pods."""
    (dep,) = _kinds(
        helm_offline.template(
            "--set",
            "image.repository=registry.local/ml/operator",
            "--set",
            "imagePullSecrets[0].name=regcred",
        )
    )["Deployment"]
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    version = (REPO / "VERSION").read_text().strip()
    assert f"--init-image=registry.local/ml/operator:{version}" in args
    assert "--image-pull-secret=regcred" in args
    (dep,) = _kinds(
        helm_offline.template("--set", "storageInitializer.image=registry.local/ml/init:1")
    )["Deployment"]
    assert (
        "--init-image=registry.local/ml/init:1"
        in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    )


def test_crds_in_chart_equal_generated(helm_offline: Helm) -> None:
    """The chart's crds/ folder (what `helm install` creates) is what `make crds` generates."""
    docs = [
        d
        for d in yaml.safe_load_all(
            helm_offline("template", "kubeinfer", str(CHART), "--include-crds").stdout
        )
        if d
    ]
    rendered = {d["metadata"]["name"]: d for d in docs if d["kind"] == "CustomResourceDefinition"}
    generated = sorted((REPO / "crds").glob("*.yaml"))
    assert len(rendered) == len(generated) == 2
    for path in generated:
        crd = yaml.safe_load(path.read_text())
        assert rendered[crd["metadata"]["name"]] == crd, f"{path.name}: run make crds"


def test_runtimes_in_chart_equal_defaults(helm_offline: Helm) -> None:
    rendered = {
        d["metadata"]["name"]: d for d in _kinds(helm_offline.template())["InferenceRuntime"]
    }
    defaults = [
        yaml.safe_load(p.read_text())
        for p in sorted((REPO / "runtimes" / "defaults").glob("*.yaml"))
    ]
    assert set(rendered) == {d["metadata"]["name"] for d in defaults}
    for default in defaults:
        assert rendered[default["metadata"]["name"]]["spec"] == default["spec"]
    custom = _kinds(
        helm_offline.template(
            "--set",
            "runtimes.triton.enabled=false",
            "--set",
            "runtimes.onnxruntime.image=reg/onnx:1",
        )
    )
    (onnx,) = custom["InferenceRuntime"]
    assert onnx["spec"]["image"] == "reg/onnx:1"


def test_optional_monitoring_objects_are_off_by_default(helm_offline: Helm) -> None:
    kinds = set(_kinds(helm_offline.template()))
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}
    docs = _kinds(helm_offline.template("-f", str(CHART / "ci" / "monitoring.yaml")))
    alerts = {r["alert"] for r in docs["PrometheusRule"][0]["spec"]["groups"][0]["rules"]}
    assert alerts == {
        "KubeinferP99LatencyHigh",
        "KubeinferGPUUtilizationLow",
        "KubeinferAutoscalerMetricsOutage",
        "KubeinferWaitingForGPUCapacity",
    }
    (dashboard,) = docs["ConfigMap"]
    assert '"uid": "kubeinfer"' in dashboard["data"]["kubeinfer.json"]
