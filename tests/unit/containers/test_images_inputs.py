"""What decides an image rebuild, and the Debian base's OCI layout (kubeinfer_cluster.images,
kubeinfer_cluster.baseimage): files in a tmp folder, no builder."""

from __future__ import annotations

import hashlib
import io
import json
import pathlib
import tarfile

import pytest

from kubeinfer_cluster import baseimage, hosttools, images, oci

SPEC = images.ImageSpec("demo", "Dockerfile", ("VERSION", "pkg"))


def checkout(root: pathlib.Path) -> pathlib.Path:
    (root / "pkg" / "demo").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM scratch\n")
    (root / "VERSION").write_text("0.1.0\n")
    (root / "pkg" / "demo" / "__init__.py").write_text("x = 1\n")
    return root


def staged_digest(repo: pathlib.Path, dest: pathlib.Path) -> str:
    images.stage_context(SPEC, dest, repo)
    return images.inputs_digest(dest, ref="r/demo:0.1.0", python_image="base", base_id="b")


def test_caches_do_not_change_the_digest_sources_do(tmp_path: pathlib.Path) -> None:
    repo = checkout(tmp_path / "repo")
    first = staged_digest(repo, tmp_path / "ctx")
    (repo / "pkg" / "demo" / "__pycache__").mkdir()
    (repo / "pkg" / "demo" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (repo / "pkg" / "demo.egg-info").mkdir()
    assert staged_digest(repo, tmp_path / "ctx") == first
    assert not (tmp_path / "ctx" / "pkg" / "demo" / "__pycache__").exists()
    (repo / "pkg" / "demo" / "__init__.py").write_text("x = 2\n")
    assert staged_digest(repo, tmp_path / "ctx") != first


def test_files_outside_the_inputs_are_not_staged(tmp_path: pathlib.Path) -> None:
    repo = checkout(tmp_path / "repo")
    first = staged_digest(repo, tmp_path / "ctx")
    (repo / "README.md").write_text("docs\n")
    assert staged_digest(repo, tmp_path / "ctx") == first
    assert not (tmp_path / "ctx" / "README.md").exists()


@pytest.mark.parametrize(
    ("change", "value"),
    [("ref", "r/demo:0.2.0"), ("python_image", "docker.io/library/python:3.11"), ("base_id", "c")],
)
def test_name_and_base_change_the_digest(tmp_path: pathlib.Path, change: str, value: str) -> None:
    ctx = tmp_path / "ctx"
    images.stage_context(SPEC, ctx, checkout(tmp_path / "repo"))
    args = {"ref": "r/demo:0.1.0", "python_image": "base", "base_id": "b"}
    before = images.inputs_digest(ctx, **args)
    assert images.inputs_digest(ctx, **{**args, change: value}) != before


def test_a_dockerfile_inside_an_input_folder_is_staged_once(tmp_path: pathlib.Path) -> None:
    repo = checkout(tmp_path / "repo")
    (repo / "pkg" / "Dockerfile").write_text("FROM scratch\n")
    spec = images.ImageSpec("demo", "pkg/Dockerfile", ("VERSION", "pkg"))
    images.stage_context(spec, tmp_path / "ctx", repo)
    assert (tmp_path / "ctx" / "pkg" / "Dockerfile").read_text() == "FROM scratch\n"
    assert (tmp_path / "ctx" / "pkg" / "demo" / "__init__.py").exists()


def test_executable_bit_changes_the_digest(tmp_path: pathlib.Path) -> None:
    repo = checkout(tmp_path / "repo")
    before = images.tree_digest(repo)
    (repo / "pkg" / "demo" / "__init__.py").chmod(0o755)
    assert images.tree_digest(repo) != before


@pytest.mark.parametrize(
    ("given", "qualified"),
    [
        ("python:3.11-slim-bookworm", "docker.io/library/python:3.11-slim-bookworm"),
        ("library/python:3.11", "docker.io/library/python:3.11"),
        ("ghcr.io/org/python:3.11", "ghcr.io/org/python:3.11"),
        ("localhost/kubeinfer/python:3.11-bookworm", "localhost/kubeinfer/python:3.11-bookworm"),
        ("registry:5000/python:3.11", "registry:5000/python:3.11"),
    ],
)
def test_qualify(given: str, qualified: str) -> None:
    assert images.qualify(given) == qualified


def _member(tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    data = b"x" if kind == tarfile.REGTYPE else b""
    info.size = len(data)
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3
    tar.addfile(info, io.BytesIO(data) if data else None)


def test_filter_rootfs_drops_devices_and_host_files() -> None:
    source = io.BytesIO()
    with tarfile.open(fileobj=source, mode="w") as tar:
        _member(tar, "./dev/", tarfile.DIRTYPE)
        _member(tar, "./dev/null", tarfile.CHRTYPE)
        _member(tar, "./dev/pts/", tarfile.DIRTYPE)
        _member(tar, "./etc/hostname")
        _member(tar, "./etc/resolv.conf")
        _member(tar, "./etc/os-release")
        _member(tar, "./usr/bin/python3.11")
    source.seek(0)
    layer = io.BytesIO()
    with (
        tarfile.open(fileobj=source) as src,
        tarfile.open(fileobj=layer, mode="w") as dst,
    ):
        baseimage.filter_rootfs(src, dst)
    layer.seek(0)
    with tarfile.open(fileobj=layer) as out:
        assert out.getnames() == ["./dev", "./etc/os-release", "./usr/bin/python3.11"]


def test_oci_index_names_the_image_and_chains_digests() -> None:
    config = b'{"architecture": "amd64"}'
    manifest, index = baseimage.build_oci_index(
        layer_digest="sha256:" + "a" * 64, layer_size=10, config=config, ref=baseimage.BASE_REF
    )
    entry = json.loads(index)["manifests"][0]
    assert entry["digest"] == "sha256:" + hashlib.sha256(manifest).hexdigest()
    assert entry["annotations"][oci.REF_ANNOTATION] == baseimage.BASE_REF
    parsed = json.loads(manifest)
    assert parsed["config"]["digest"] == "sha256:" + hashlib.sha256(config).hexdigest()
    assert parsed["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar"


def test_missing_tools_without_apt_say_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hosttools.shutil, "which", lambda name: None)
    with pytest.raises(hosttools.HostToolError) as err:
        hosttools.ensure_host_tools(["buildah", "runc"])
    message = str(err.value)
    assert "no apt-get" in message
    assert "apt-get install --no-install-recommends buildah runc" in message


def test_missing_tools_as_a_user_say_sudo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        hosttools.shutil, "which", lambda name: "/usr/bin/apt-get" if name == "apt-get" else None
    )
    monkeypatch.setattr(hosttools.os, "geteuid", lambda: 1000)
    with pytest.raises(hosttools.HostToolError, match="sudo apt-get install"):
        hosttools.ensure_host_tools(["umoci"])


def test_base_archive_round_trip(tmp_path: pathlib.Path) -> None:
    """The Debian base's archive writer and the archive reader agree (no mmdebstrap needed)."""
    rootfs_tar = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs_tar, "w") as tar:
        _member(tar, "./usr/bin/python3.11")
        _member(tar, "./dev/null", tarfile.CHRTYPE)
    out = tmp_path / "base.oci.tar"
    baseimage._write_base_archive(rootfs_tar, out, "2026-01-01T00:00:00Z")
    info = oci.read_archive(out)
    assert info.ref == baseimage.BASE_REF
    assert info.config.cmd == ("python3",)
    assert "LANG=C.UTF-8" in info.config.env
    ((_, size, media_type),) = info.layers
    assert media_type == "application/vnd.oci.image.layer.v1.tar"
    assert oci.uncompressed_bytes(out) == size == info.compressed_bytes


def test_the_gpu_variant_is_built_only_when_named() -> None:
    """`make images` (and so `make test`) builds the CPU images; the gpu variant, several GB
    of CUDA libraries this machine cannot run, only with IMAGES=onnx-server-gpu."""
    assert [s.name for s in images.select()] == ["operator", "onnx-server"]
    [gpu] = images.select(["onnx-server-gpu"])
    assert gpu.build_args == (("DEVICE", "gpu"),)
    assert gpu.dockerfile == images.select(["onnx-server"])[0].dockerfile  # one Dockerfile
    assert images.spec_ref(gpu, "r.example/ml", "0.1.0") == "r.example/ml/onnx-server:0.1.0-gpu"
    assert images.spec_ref(images.select(["onnx-server"])[0], "r", "1") == "r/onnx-server:1"
    with pytest.raises(images.ImageError, match="unknown images"):
        images.select(["onnx-server-tpu"])


def test_build_arguments_change_the_digest_and_none_keep_it(tmp_path: pathlib.Path) -> None:
    ctx = tmp_path / "ctx"
    images.stage_context(SPEC, ctx, checkout(tmp_path / "repo"))
    args = {"ref": "r/demo:0.1.0", "python_image": "base", "base_id": "b"}
    plain = images.inputs_digest(ctx, **args)
    assert images.inputs_digest(ctx, **args, build_args=()) == plain
    gpu = images.inputs_digest(ctx, **args, build_args=(("DEVICE", "gpu"),))
    assert gpu != plain
    assert images.inputs_digest(ctx, **args, build_args=(("DEVICE", "cpu"),)) not in (gpu, plain)


def _copied(dockerfile: str) -> list[str]:
    """The build-context paths a Dockerfile's COPY instructions read (not --from= stages)."""
    sources: list[str] = []
    for line in dockerfile.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from=") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


@pytest.mark.parametrize("spec", images.IMAGES, ids=lambda spec: spec.name)
def test_what_each_dockerfile_copies_is_an_input_its_dockerignore_lets_through(
    spec: images.ImageSpec,
) -> None:
    """`make images` stages only the spec's inputs (and digests only them), and BuildKit sends
    only what the Dockerfile's .dockerignore lets through: a file COPY reads must be in both
    (constraints-dev.txt was added to all three at once)."""
    dockerfile = images.REPO / spec.dockerfile
    ignore = pathlib.Path(f"{dockerfile}.dockerignore").read_text().split()
    copied = _copied(dockerfile.read_text())
    assert "constraints-dev.txt" in copied
    for source in copied:
        covering = [i for i in spec.inputs if source == i or source.startswith(f"{i}/")]
        assert covering, f"{spec.dockerfile} copies {source}, not in {spec.inputs}"
        assert f"!{covering[0]}" in ignore or f"!{covering[0]}/" in ignore, (source, ignore)
