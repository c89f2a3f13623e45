"""The pod builder's contract: build_storage_plan (kubeinfer.storage.uri)."""

from __future__ import annotations

from kubeinfer.core import storage_uri as uri

REPOSITORY = {"name": "model-repository", "emptyDir": {}}
REPOSITORY_MOUNT = {"name": "model-repository", "mountPath": "/mnt/models"}


def test_pvc_mounts_the_claim_read_only_at_the_version_dir_and_copies_nothing() -> None:
    plan = uri.build_storage_plan("pvc://model-store/resnet/v3", model_name="resnet", version=3)
    assert plan.mode == uri.PlanMode.MOUNT_CLAIM
    assert plan.init_container is None
    assert plan.volumes == (
        REPOSITORY,
        {
            "name": "model-pvc",
            "persistentVolumeClaim": {"claimName": "model-store", "readOnly": True},
        },
    )
    assert plan.runtime_volume_mounts == (
        REPOSITORY_MOUNT,
        {
            "name": "model-pvc",
            "mountPath": "/mnt/models/resnet/3",
            "readOnly": True,
            "subPath": "resnet/v3",
        },
    )


def test_pvc_root_has_no_subpath() -> None:
    plan = uri.build_storage_plan("pvc://model-store", repository_path="/models")
    assert plan.runtime_volume_mounts[1] == {
        "name": "model-pvc",
        "mountPath": "/models/model/1",
        "readOnly": True,
    }


def test_remote_uris_get_an_emptydir_and_a_storage_init_container() -> None:
    plan = uri.build_storage_plan(
        "s3://models/resnet/", model_name="resnet", version="3", credentials_secret="s3-creds"
    )
    assert plan.mode == uri.PlanMode.INIT_CONTAINER
    assert plan.volumes == (REPOSITORY,)
    assert plan.runtime_volume_mounts == (REPOSITORY_MOUNT,)
    assert plan.init_container == {
        "name": "storage-initializer",
        "args": [
            "storage-init",
            "s3://models/resnet/",
            "/mnt/models",
            "--model-name=resnet",
            "--version=3",
        ],
        "volumeMounts": [REPOSITORY_MOUNT],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "envFrom": [{"secretRef": {"name": "s3-creds"}}],
    }


def test_https_keeps_its_checksum_and_query_in_the_init_args() -> None:
    digest = "0f" * 32
    plan = uri.build_storage_plan(f"https://example.com/m.onnx?sig=1#sha256={digest}")
    assert plan.init_container is not None
    assert plan.init_container["args"][1] == f"https://example.com/m.onnx?sig=1#sha256={digest}"
    assert "envFrom" not in plan.init_container


def test_file_uris_round_trip() -> None:
    plan = uri.build_storage_plan("file:///srv/my%20models/resnet")
    assert plan.init_container is not None
    assert uri.parse_storage_uri(plan.init_container["args"][1]) == uri.FileUri(
        path="/srv/my models/resnet"
    )
