"""The ``storage-init`` command end to end: exit codes, one-line errors, no secrets printed."""

from __future__ import annotations

import pathlib

import pytest
from storage_servers import MODEL, TOKEN, HttpServer, S3Server

from kubeinfer.storage import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main.storage_init_main([*argv, "--backoff", "0.001"])
    out, err = capsys.readouterr()
    return code, out, err


def _use_s3(monkeypatch: pytest.MonkeyPatch, s3: S3Server, key: tuple[str, str]) -> None:
    # What the pod gets from the Secret through envFrom.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key[1])
    monkeypatch.setenv("S3_ENDPOINT", s3.endpoint)


def test_s3_success_prints_no_secret(
    s3_server: S3Server,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _use_s3(monkeypatch, s3_server, s3_server.reader)
    code, out, err = _run(
        capsys,
        "s3://models/single/resnet.onnx",
        str(tmp_path),
        "--model-name",
        "resnet",
        "--version",
        "2",
    )
    assert (code, err) == (0, "")
    assert (tmp_path / "resnet/2/resnet.onnx").read_bytes() == MODEL
    assert "fetched s3://models/single/resnet.onnx" in out
    assert s3_server.reader[1] not in out
    assert s3_server.reader[0] not in out


@pytest.mark.parametrize("which", ["unknown", "wrong-secret"])
def test_s3_bad_credentials_exit_4_with_one_redacted_line(
    s3_server: S3Server,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    which: str,
) -> None:
    secret = "sUpErSeCrEt/wJalrXUtnFEMI+K7MDENG"
    key_id = "AKIAUNKNOWNKEY000000" if which == "unknown" else s3_server.reader[0]
    _use_s3(monkeypatch, s3_server, (key_id, secret))
    code, out, err = _run(capsys, "s3://models/single/resnet.onnx", str(tmp_path))
    assert code == 4
    assert err.count("\n") == 1
    assert err.startswith("kubeinfer storage-init: error: s3://models/single/resnet.onnx: access")
    assert secret not in out + err
    assert key_id not in out + err


def test_s3_missing_key_exits_3(
    s3_server: S3Server,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _use_s3(monkeypatch, s3_server, s3_server.reader)
    code, _, err = _run(capsys, "s3://models/absent.onnx", str(tmp_path))
    assert code == 3
    assert "s3://models/absent.onnx: no object or prefix by that name" in err


def test_http_token_is_never_printed(
    http_server: HttpServer,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The Secret's HTTP_AUTHORIZATION key: the whole header value.
    monkeypatch.setenv("HTTP_AUTHORIZATION", f"Bearer wrong-{TOKEN}")
    code, out, err = _run(capsys, f"{http_server.base}/private/model.onnx", str(tmp_path))
    assert code == 4
    assert "HTTP 403" in err
    assert TOKEN not in out + err

    # Or a bare token in STORAGE_HTTP_TOKEN.
    monkeypatch.delenv("HTTP_AUTHORIZATION")
    monkeypatch.setenv("STORAGE_HTTP_TOKEN", TOKEN)
    code, out, err = _run(capsys, f"{http_server.base}/private/model.onnx", str(tmp_path))
    assert (code, err) == (0, "")
    assert TOKEN not in out


def test_flaky_http_succeeds_with_retries(
    http_server: HttpServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, f"{http_server.base}/flaky/model.onnx", str(tmp_path))
    assert code == 0
    assert out.count("retrying in") == 2


def test_retries_option_bounds_attempts(
    http_server: HttpServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(
        capsys, f"{http_server.base}/flaky/model.onnx", str(tmp_path), "--retries", "1"
    )
    assert code == 1
    assert "gave up after 2 attempts" in err
    assert http_server.hits["/flaky/model.onnx"] == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["gs://bucket/model", "/tmp/x"], "unsupported storage URI scheme 'gs'"),
        (["http://10.0.0.1/m.onnx", "/tmp/x"], "127.0.0.0/8"),
        (["file:///srv/m", "/tmp/x", "--version", "v1"], "must be a positive integer"),
        (["file:///srv/m", "/tmp/x", "--model-name", "../etc"], "model name"),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = _run(capsys, *argv)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1


def test_argparse_errors_return_instead_of_exiting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main.storage_init_main([]) == 2
    assert main.storage_init_main(["--help"]) == 0
    assert "storage-init" in capsys.readouterr().out


def test_pvc_copies_nothing(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "pvc://model-store/resnet", str(tmp_path))
    assert code == 0
    assert "nothing to copy" in out
    assert list(tmp_path.iterdir()) == []


def test_file_tree_and_single_file(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "src"
    (source / "resnet/1").mkdir(parents=True)
    (source / "resnet/1/model.onnx").write_bytes(MODEL)
    (source / "resnet/config.pbtxt").write_text('name: "resnet"\n')
    repo = tmp_path / "repo"
    assert _run(capsys, f"file://{source}", str(repo))[0] == 0
    assert (repo / "resnet/1/model.onnx").read_bytes() == MODEL
    assert (repo / "resnet/config.pbtxt").exists()

    code, _, _ = _run(
        capsys, f"file://{source}/resnet/1/model.onnx", str(repo), "--model-name", "other"
    )
    assert code == 0
    assert (repo / "other/1/model.onnx").read_bytes() == MODEL

    code, _, err = _run(capsys, f"file://{source}/absent", str(repo))
    assert code == 3
    assert f"file://{source}/absent: no such file or directory" in err


def test_single_file_lands_under_the_name_the_runtime_opens(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Triton looks for <version>/model.onnx; a URL's own name would leave the model LOADING.
    (tmp_path / "resnet50.onnx").write_bytes(MODEL)
    repo = tmp_path / "repo"
    args = ["--model-name", "resnet", "--file-name", "model.onnx"]
    code, _, _ = _run(capsys, f"file://{tmp_path}/resnet50.onnx", str(repo), *args)
    assert code == 0
    assert [p.name for p in (repo / "resnet/1").iterdir()] == ["model.onnx"]
    # A tree keeps its names: it may hold several files, and the runtime's name among them.
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree/weights.bin").write_bytes(MODEL)
    code, _, _ = _run(capsys, f"file://{tmp_path}/tree", str(repo), *args)
    assert code == 0
    assert [p.name for p in (repo / "resnet/1").iterdir()] == ["weights.bin"]


def test_generated_config_is_merged_over_the_shipped_one(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    generated = tmp_path / "generated" / "config.pbtxt"
    generated.parent.mkdir()
    generated.write_text(
        'name: "resnet"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 32\n'
        "instance_group [ { kind: KIND_GPU, count: 1, gpus: [ 0 ] } ]\n"
    )
    source = tmp_path / "src"
    (source / "1").mkdir(parents=True)
    (source / "1/model.onnx").write_bytes(MODEL)
    (source / "config.pbtxt").write_text(
        'name: "r"\nmax_batch_size: 4\nparameters { key: "k" value: { string_value: "v" } }\n'
    )
    repo = tmp_path / "repo"
    args = ["--model-name", "resnet", f"--config={generated}"]
    for _ in range(2):  # a restarted init container writes the same file
        assert _run(capsys, f"file://{source}", str(repo), *args)[0] == 0
        text = (repo / "resnet/config.pbtxt").read_text()
        assert text.startswith(generated.read_text())
        assert 'parameters { key: "k" value: { string_value: "v" } }' in text
        assert "max_batch_size: 4" not in text
    # Nothing shipped: the generated config as it is.
    (source / "config.pbtxt").unlink()
    assert _run(capsys, f"file://{source}", str(repo), *args)[0] == 0
    assert (repo / "resnet/config.pbtxt").read_text() == generated.read_text()


def test_a_broken_shipped_config_fails_with_its_position(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    generated = tmp_path / "config.pbtxt"
    generated.write_text('name: "resnet"\n')
    source = tmp_path / "src"
    (source / "1").mkdir(parents=True)
    (source / "1/model.onnx").write_bytes(MODEL)
    (source / "config.pbtxt").write_text('name: "resnet"\ninput [ { name: "x" \n')
    code, _, err = _run(
        capsys,
        f"file://{source}",
        str(tmp_path / "repo"),
        "--model-name=resnet",
        f"--config={generated}",
    )
    assert code == 6
    assert "config.pbtxt shipped with model 'resnet' is not valid text format" in err
    assert "line 2" in err and len(err.strip().splitlines()) == 1
