"""config.json for runc (kubeinfer_cluster.containers.build_config): pure, from a recorded
`runc spec` (runc 1.1.5, Debian bookworm's)."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from kubeinfer_cluster import containers, oci

SPEC = json.loads((pathlib.Path(__file__).parent / "fixtures" / "runc-1.1.5-spec.json").read_text())
ROOTFS = pathlib.Path("/cache/rootfs/sha256-abc/rootfs")


def config(**kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("rootfs", ROOTFS)
    kwargs.setdefault("args", ["kubeinfer", "operator"])
    kwargs.setdefault("env", ["PATH=/opt/venv/bin:/usr/bin"])
    return containers.build_config(SPEC, **kwargs)


def by_destination(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["destination"]: m for m in cfg["mounts"]}


def test_pod_like_process_uid_1000_no_capabilities_no_terminal() -> None:
    cfg = config()
    process = cfg["process"]
    assert process["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000]}
    assert process["args"] == ["kubeinfer", "operator"]
    assert process["terminal"] is False
    assert process["noNewPrivileges"] is True
    assert all(caps == [] for caps in process["capabilities"].values())
    assert set(process["capabilities"]) == {"bounding", "effective", "permitted", "ambient"}


def test_no_cgroup_resources_rlimits_or_network_namespace() -> None:
    cfg = config()
    assert "resources" not in cfg["linux"]
    assert "rlimits" not in cfg["process"]
    assert [n["type"] for n in cfg["linux"]["namespaces"]] == ["pid", "ipc", "uts", "mount"]


def test_read_only_root_at_the_shared_rootfs() -> None:
    assert config()["root"] == {"path": str(ROOTFS), "readonly": True}
    assert config(readonly=False)["root"]["readonly"] is False


def test_tmp_is_a_tmpfs_by_default_and_runc_defaults_are_kept() -> None:
    mounts = by_destination(config())
    assert mounts["/tmp"]["type"] == "tmpfs"
    assert "mode=1777" in mounts["/tmp"]["options"]
    assert {"/proc", "/dev", "/dev/pts", "/dev/shm", "/sys"} <= set(mounts)
    assert config()["linux"]["maskedPaths"] == SPEC["linux"]["maskedPaths"]


def test_bind_mounts_read_only_or_writable_parents_first() -> None:
    repo = pathlib.Path("/host/models")
    cfg = config(
        mounts=[
            containers.Mount("/mnt/models/mlp/kubeinfer.json", pathlib.Path("/host/cfg.json")),
            containers.Mount("/mnt/models", repo, readonly=False),
            containers.Mount("/tmp", pathlib.Path("/host/tmp"), readonly=False),
        ]
    )
    mounts = by_destination(cfg)
    assert mounts["/mnt/models"] == {
        "destination": "/mnt/models",
        "type": "bind",
        "source": "/host/models",
        "options": ["rbind", "nosuid", "nodev", "rw"],
    }
    assert "ro" in mounts["/mnt/models/mlp/kubeinfer.json"]["options"]
    assert mounts["/tmp"]["type"] == "bind"  # a given /tmp replaces the default tmpfs
    order = [m["destination"] for m in cfg["mounts"]]
    assert order.index("/mnt/models") < order.index("/mnt/models/mlp/kubeinfer.json")


def test_base_is_not_changed() -> None:
    before = json.dumps(SPEC, sort_keys=True)
    config(mounts=[containers.Mount("/data", pathlib.Path("/x"))])
    assert json.dumps(SPEC, sort_keys=True) == before


def test_empty_args_refused() -> None:
    with pytest.raises(ValueError, match="process"):
        config(args=[])


def test_env_pod_values_win_over_the_image() -> None:
    image = oci.ImageConfig.from_oci(
        {"config": {"Env": ["PATH=/opt/venv/bin:/usr/bin", "PYTHONUNBUFFERED=1"]}}
    )
    assert containers.env_for(image, {"PYTHONUNBUFFERED": "0", "HOME": "/tmp"}) == [
        "PATH=/opt/venv/bin:/usr/bin",
        "PYTHONUNBUFFERED=0",
        "HOME=/tmp",
    ]


def test_image_config_from_oci_defaults() -> None:
    image = oci.ImageConfig.from_oci({"config": {"Entrypoint": ["kubeinfer"]}})
    assert image.entrypoint == ("kubeinfer",)
    assert (image.cmd, image.user, image.workdir) == ((), "", "/")


IMAGE = oci.ImageConfig.from_oci(
    {"config": {"Entrypoint": ["kubeinfer-onnx-server", "--address", "0.0.0.0"], "Cmd": ["-m"]}}
)


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        (None, None, ["kubeinfer-onnx-server", "--address", "0.0.0.0", "-m"]),
        (None, ["--x"], ["kubeinfer-onnx-server", "--address", "0.0.0.0", "--x"]),
        (["srv"], None, ["srv"]),
        (["srv"], ["--port=$(PORT)"], ["srv", "--port=8000"]),
    ],
)
def test_process_args_follow_kubernetes(
    command: list[str] | None, args: list[str] | None, expected: list[str]
) -> None:
    got = containers.process_args(IMAGE, command=command, args=args, env={"PORT": "8000"})
    assert got == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("--repo=$(REPO)", "--repo=/mnt/models"),
        ("$(REPO)/$(NAME)", "/mnt/models/mlp"),
        ("$(UNSET)", "$(UNSET)"),
        ("$$(REPO)", "$(REPO)"),
        ("cost $5", "cost $5"),
        ("$(REPO", "$(REPO"),
    ],
)
def test_expand_like_the_kubelet(value: str, expected: str) -> None:
    assert containers.expand(value, {"REPO": "/mnt/models", "NAME": "mlp"}) == expected


@pytest.mark.parametrize(
    ("error", "advice"),
    [
        ('level=error msg="runc run failed: no cgroup mount found in mountinfo"', "nsenter"),
        ("mount proc: operation not permitted", "CAP_SYS_ADMIN"),
        ("open /run/runc: permission denied", "state directory"),
        ("something new", "runc's error above"),
    ],
)
def test_runc_errors_say_what_to_do(error: str, advice: str) -> None:
    assert advice in containers.diagnose(error)
