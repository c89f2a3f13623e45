"""Build the local cluster's binaries from the Go module proxy, once per machine.

Owns: the pinned versions, the generated Go wrapper modules, and the versioned cache layout
(``$KUBEINFER_CACHE`` or ``~/.cache/kubeinfer``). It never touches the repository: every
artefact lives in the cache, so a fresh clone with a warm cache builds nothing.

Why wrapper modules: ``k8s.io/kubernetes`` and etcd's server carry ``replace`` directives, so
``go install pkg@version`` is refused. A tiny module that requires them and replaces each staging
module with its published tag builds the real binaries. When the proxy lacks a pinned
dependency, ``_tidy`` replaces it with the nearest newer served version and records it in
``replacements.txt`` beside the binaries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

GO_VERSION_DIRECTIVE = "1.26"

# Kubernetes v1.36 staging modules, published as k8s.io/<name> v0.36.x.
STAGING_MODULES = [
    "api",
    "apiextensions-apiserver",
    "apimachinery",
    "apiserver",
    "cli-runtime",
    "client-go",
    "cloud-provider",
    "cluster-bootstrap",
    "code-generator",
    "component-base",
    "component-helpers",
    "controller-manager",
    "cri-api",
    "cri-client",
    "cri-streaming",
    "csi-translation-lib",
    "dynamic-resource-allocation",
    "endpointslice",
    "externaljwt",
    "kms",
    "kube-aggregator",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "metrics",
    "mount-utils",
    "pod-security-admission",
    "sample-apiserver",
    "sample-cli-plugin",
    "sample-controller",
    "streaming",
]
# v1.34 has no cri-streaming/streaming modules.
STAGING_MODULES_1_34 = [m for m in STAGING_MODULES if m not in ("cri-streaming", "streaming")]

KUBERNETES_VERSIONS = ("v1.36.3", "v1.36.1", "v1.34.4")
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.22.0"
KUBECONFORM_VERSION = "v0.7.0"
# Prometheus 3.X.Y is published to the Go module proxy as v0.3XX.Y (v0.316.0 is 3.16.0).
PROMETHEUS_VERSION = "v0.316.0"
# Only the discovery mechanisms the monitoring tests use (file, http and kubernetes): the
# default build also links every cloud provider's SDK, which triples the compile time.
PROMETHEUS_TAGS = ("remove_all_sd", "enable_kubernetes_sd")

K8S_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


class BuildError(RuntimeError):
    """A build step failed; the message names the step and carries go's error output."""


def cache_root() -> pathlib.Path:
    """The cache directory; ``KUBEINFER_CACHE`` overrides the default."""
    env = os.environ.get("KUBEINFER_CACHE")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "kubeinfer"


@dataclasses.dataclass(frozen=True)
class Tools:
    """Absolute paths of every built tool."""

    kube_apiserver: pathlib.Path
    kube_controller_manager: pathlib.Path
    kube_scheduler: pathlib.Path
    kubectl: pathlib.Path
    etcd: pathlib.Path
    kwok: pathlib.Path
    kwok_stages: pathlib.Path
    helm: pathlib.Path | None
    kubernetes_version: str

    @property
    def bin_dirs(self) -> list[pathlib.Path]:
        dirs = [self.kubectl.parent]
        if self.helm is not None:
            dirs.append(self.helm.parent)
        return dirs


def _go_env(root: pathlib.Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GOTOOLCHAIN="local",
        GOMODCACHE=str(root / "go" / "mod"),
        GOCACHE=str(root / "go" / "build"),
        GOFLAGS="-mod=mod -buildvcs=false",
        CGO_ENABLED="0",
    )
    return env


def _say(message: str) -> None:
    print(f"[kubeinfer build] {message}", file=sys.stderr, flush=True)


def _run_go(args: list[str], *, cwd: pathlib.Path, root: pathlib.Path, step: str) -> str:
    """Run go with a heartbeat every 30 s, so a cold build never looks hung."""
    started = time.monotonic()
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(30):
            _say(f"{step}: still running ({time.monotonic() - started:.0f} s)")

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    try:
        proc = subprocess.run(
            ["go", *args], cwd=cwd, env=_go_env(root), capture_output=True, text=True
        )
    except FileNotFoundError as exc:
        raise BuildError(f"{step}: the go command is not installed (apt install golang)") from exc
    finally:
        done.set()
    if proc.returncode != 0:
        raise BuildError(f"{step} failed:\n{proc.stderr[-4000:]}")
    _say(f"{step}: done in {time.monotonic() - started:.0f} s")
    return proc.stdout + proc.stderr


_MISSING = re.compile(
    r"([A-Za-z0-9][\w.\-/~]+)@(v[\w.\-+]+): (?:reading|invalid version|unknown revision|not found)"
)


def _tidy(src: pathlib.Path, root: pathlib.Path, step: str) -> list[str]:
    """`go mod tidy`, replacing unserved pinned versions with the nearest newer served one."""
    replaced: list[str] = []
    for _ in range(20):
        try:
            _run_go(["mod", "tidy"], cwd=src, root=root, step=f"{step}: go mod tidy")
            return replaced
        except BuildError as exc:
            match = _MISSING.search(str(exc))
            if not match:
                raise
            module, version = match.group(1), match.group(2)
            newer = _nearest_newer(module, version, src, root)
            if newer is None:
                raise BuildError(
                    f"{step}: {module}@{version} is not served and no newer version is"
                ) from exc
            _say(f"{step}: {module}@{version} not served; replacing with {newer}")
            with (src / "go.mod").open("a") as fh:
                fh.write(f"\nreplace {module} => {module} {newer}\n")
            replaced.append(f"{module} {version} => {newer}")
    raise BuildError(f"{step}: gave up after 20 replacements: {replaced}")


def _nearest_newer(module: str, version: str, src: pathlib.Path, root: pathlib.Path) -> str | None:
    out = _run_go(["list", "-m", "-versions", module], cwd=src, root=root, step=f"list {module}")
    versions = out.split()[1:]

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", v.split("-")[0])[:3])

    newer = sorted((v for v in versions if key(v) > key(version)), key=key)
    return newer[0] if newer else None


def _ldflags(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate={stamp}",
        ]
    return " ".join(flags)


def _write(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _all_exist(paths: list[pathlib.Path]) -> bool:
    return all(p.is_file() and os.access(p, os.X_OK) for p in paths)


def build_kubernetes(root: pathlib.Path, version: str) -> pathlib.Path:
    """kube-apiserver, kube-controller-manager, kube-scheduler and kubectl at ``version``."""
    with _exclusive(root, f"kubernetes-{version}"):
        return _build_kubernetes(root, version)


def _build_kubernetes(root: pathlib.Path, version: str) -> pathlib.Path:
    out = root / "bin" / f"kubernetes-{version}"
    if _all_exist([out / c for c in K8S_COMMANDS]):
        return out
    staging = STAGING_MODULES if version.startswith("v1.36") else STAGING_MODULES_1_34
    staging_tag = "v0." + version.lstrip("v").split(".", 1)[1]
    src = root / "src" / f"kubernetes-{version}"
    shutil.rmtree(src, ignore_errors=True)
    lines = [
        "module kubeinfer.local/k8swrap",
        "",
        f"go {GO_VERSION_DIRECTIVE}",
        "",
        f"require k8s.io/kubernetes {version}",
        "",
        "tool (",
        *(f"\tk8s.io/kubernetes/cmd/{c}" for c in K8S_COMMANDS),
        ")",
        "",
        "replace (",
        *(f"\tk8s.io/{m} => k8s.io/{m} {staging_tag}" for m in staging),
        ")",
        "",
    ]
    _write(src / "go.mod", "\n".join(lines))
    step = f"kubernetes {version}"
    _say(f"{step}: resolving modules (cold: about a minute)")
    replaced = _tidy(src, root, step)
    _say(f"{step}: compiling {', '.join(K8S_COMMANDS)} (cold: 15-30 min on 2 cores)")
    out.mkdir(parents=True, exist_ok=True)
    _run_go(
        [
            "build",
            "-trimpath",
            "-ldflags",
            _ldflags(version),
            "-o",
            str(out) + "/",
            *(f"k8s.io/kubernetes/cmd/{c}" for c in K8S_COMMANDS),
        ],
        cwd=src,
        root=root,
        step=f"{step}: go build",
    )
    _write(out / "replacements.txt", "\n".join(replaced) + "\n")
    return out


def build_etcd(root: pathlib.Path) -> pathlib.Path:
    with _exclusive(root, f"etcd-{ETCD_VERSION}"):
        return _build_etcd(root)


def _build_etcd(root: pathlib.Path) -> pathlib.Path:
    out = root / "bin" / f"etcd-{ETCD_VERSION}"
    if _all_exist([out / "etcd"]):
        return out / "etcd"
    src = root / "src" / f"etcd-{ETCD_VERSION}"
    shutil.rmtree(src, ignore_errors=True)
    _write(
        src / "go.mod",
        f"module kubeinfer.local/etcdwrap\n\ngo {GO_VERSION_DIRECTIVE}\n\n"
        f"require go.etcd.io/etcd/server/v3 {ETCD_VERSION}\n",
    )
    _write(
        src / "main.go",
        'package main\n\nimport (\n\t"os"\n\n'
        '\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
        "func main() { etcdmain.Main(os.Args) }\n",
    )
    step = f"etcd {ETCD_VERSION}"
    _tidy(src, root, step)
    _run_go(
        ["build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "etcd"), "."],
        cwd=src,
        root=root,
        step=f"{step}: go build",
    )
    return out / "etcd"


def _build_tool_module(
    root: pathlib.Path,
    name: str,
    module: str,
    version: str,
    packages: list[str],
    *,
    tags: tuple[str, ...] = (),
    ldflags: str = "-s -w",
    go_mod_extra: tuple[str, ...] = (),
) -> pathlib.Path:
    """Build main packages of a module that has no replace directives (kwok, helm, prometheus).

    ``go_mod_extra`` lines (``replace``/``exclude``) are copied into the wrapper for a module
    that has a few: only the main module's directives apply, so the wrapper must repeat them.
    """
    with _exclusive(root, f"{name}-{version}"):
        return _compile_tool_module(
            root,
            name,
            module,
            version,
            packages,
            tags=tags,
            ldflags=ldflags,
            go_mod_extra=go_mod_extra,
        )


def _compile_tool_module(
    root: pathlib.Path,
    name: str,
    module: str,
    version: str,
    packages: list[str],
    *,
    tags: tuple[str, ...],
    ldflags: str,
    go_mod_extra: tuple[str, ...],
) -> pathlib.Path:
    out = root / "bin" / f"{name}-{version}"
    binaries = [out / p.rsplit("/", 1)[1] for p in packages]
    if _all_exist(binaries):
        return out
    src = root / "src" / f"{name}-{version}"
    shutil.rmtree(src, ignore_errors=True)
    _write(
        src / "go.mod",
        "\n".join(
            [
                f"module kubeinfer.local/{name}wrap",
                "",
                f"go {GO_VERSION_DIRECTIVE}",
                "",
                f"require {module} {version}",
                "",
                "tool (",
                *(f"\t{p}" for p in packages),
                ")",
                "",
                *go_mod_extra,
                "",
            ]
        ),
    )
    step = f"{name} {version}"
    _say(f"{step}: resolving modules")
    replaced = _tidy(src, root, step)
    out.mkdir(parents=True, exist_ok=True)
    _say(f"{step}: compiling {', '.join(p.rsplit('/', 1)[1] for p in packages)}")
    tag_args = ["-tags", ",".join(tags)] if tags else []
    _run_go(
        ["build", "-trimpath", *tag_args, "-ldflags", ldflags, "-o", str(out) + "/", *packages],
        cwd=src,
        root=root,
        step=f"{step}: go build",
    )
    if replaced:
        _write(out / "replacements.txt", "\n".join(replaced) + "\n")
    return out


def build_kwok(root: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    # Under kwok's lock (re-entrant) with the binary: two first runs must not both copy.
    with _exclusive(root, f"kwok-{KWOK_VERSION}"):
        out = _build_tool_module(
            root, "kwok", "sigs.k8s.io/kwok", KWOK_VERSION, ["sigs.k8s.io/kwok/cmd/kwok"]
        )
        stages = out / "stages"
        if not stages.is_dir():
            # The stage files ship inside the module; copy the ones a kubelet stand-in needs,
            # into a fresh folder renamed into place, so a half copy is never taken as done.
            mod = (
                root / "go" / "mod" / "sigs.k8s.io" / f"kwok@{KWOK_VERSION}" / "kustomize" / "stage"
            )
            partial = out / "stages.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            for pattern in (
                "node/fast/*.yaml",
                "node/heartbeat-with-lease/*.yaml",
                "pod/fast/*.yaml",
            ):
                for f in mod.glob(pattern):
                    if f.name != "kustomization.yaml":
                        shutil.copy(f, partial / f"{f.parent.name}-{f.name}")
            partial.rename(stages)
    return out / "kwok", stages


def build_helm(root: pathlib.Path) -> pathlib.Path:
    out = _build_tool_module(
        root, "helm", "helm.sh/helm/v3", HELM_VERSION, ["helm.sh/helm/v3/cmd/helm"]
    )
    return out / "helm"


def build_kubeconform(root: pathlib.Path) -> pathlib.Path:
    out = _build_tool_module(
        root,
        "kubeconform",
        "github.com/yannh/kubeconform",
        KUBECONFORM_VERSION,
        ["github.com/yannh/kubeconform/cmd/kubeconform"],
    )
    return out / "kubeconform"


@dataclasses.dataclass(frozen=True)
class Prometheus:
    """The Prometheus server and promtool, built together at one version."""

    prometheus: pathlib.Path
    promtool: pathlib.Path
    version: str


def build_prometheus(root: pathlib.Path) -> Prometheus:
    """Prometheus and promtool at ``PROMETHEUS_VERSION`` (cold: several minutes on 2 cores).

    Without the ``builtinassets`` tag the web UI is not embedded (its assets come from npm, not
    the module); the HTTP API, which is all the tests use, is unaffected.
    """
    package = "github.com/prometheus/prometheus"
    _, minor, patch = PROMETHEUS_VERSION.lstrip("v").split(".")
    release = f"3.{int(minor) - 300}.{patch}"
    stamp = " ".join(
        f"-X github.com/prometheus/common/version.{key}={value}"
        for key, value in (("Version", release), ("Branch", "module-proxy"))
    )
    out = _build_tool_module(
        root,
        "prometheus",
        package,
        PROMETHEUS_VERSION,
        [f"{package}/cmd/prometheus", f"{package}/cmd/promtool"],
        tags=PROMETHEUS_TAGS,
        ldflags=f"-s -w {stamp}",
    )
    return Prometheus(
        prometheus=out / "prometheus", promtool=out / "promtool", version=PROMETHEUS_VERSION
    )


KEDA_VERSION = "v2.21.0"
# KEDA's own go.mod directives at KEDA_VERSION, repeated in the wrapper (see _build_tool_module).
KEDA_GO_MOD_EXTRA = (
    "replace github.com/nexus-rpc/nexus-proto-annotations v0.1.0 => "
    "github.com/nexus-rpc/nexus-proto-annotations v0.1.1-0.20260629224316-835bd8d49cb4",
    "exclude github.com/go-chi/chi/v5 v5.2.3",
)


@dataclasses.dataclass(frozen=True)
class Keda:
    """KEDA's operator and metrics apiserver (``cmd/adapter``), and its CRDs from the module."""

    operator: pathlib.Path
    adapter: pathlib.Path
    crds: pathlib.Path
    version: str


def build_keda(root: pathlib.Path) -> Keda:
    """KEDA's operator and metrics apiserver at ``KEDA_VERSION`` from the Go module proxy, for
    bench/realscale (a real HPA fed by KEDA). Every scaler is linked in, as KEDA ships it: the
    cold build is long (every cloud SDK), a warm one is instant."""
    package = "github.com/kedacore/keda/v2"
    stamp = (
        f"-X {package}/version.Version={KEDA_VERSION.lstrip('v')} "
        f"-X {package}/version.GitCommit=module-proxy"
    )
    out = _build_tool_module(
        root,
        "keda",
        package,
        KEDA_VERSION,
        [f"{package}/cmd/operator", f"{package}/cmd/adapter"],
        ldflags=f"-s -w {stamp}",
        go_mod_extra=KEDA_GO_MOD_EXTRA,
    )
    module_dir = root / "go" / "mod" / "github.com" / "kedacore" / "keda" / f"v2@{KEDA_VERSION}"
    crds = module_dir / "config" / "crd" / "bases"
    return Keda(operator=out / "operator", adapter=out / "adapter", crds=crds, version=KEDA_VERSION)


_held = threading.local()


@contextlib.contextmanager
def _exclusive(root: pathlib.Path, name: str) -> Iterator[None]:
    """One build of ``name`` at a time per cache, taken only when it must be built. Every
    checkout on the machine shares the cache, and a build starts by wiping its source folder:
    two at once would delete each other's sources (and pay for the same 20-minute compile
    twice). A lock per tool, so a long build of one never blocks a check of another.
    Re-entrant within a thread (flock is per open file: a second open would wait for itself)."""
    held: set[str] = getattr(_held, "names", set())
    _held.names = held
    if name in held:
        yield
        return
    locks = root / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"{name}.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(f"another process is building {name} in this cache; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        held.add(name)
        try:
            yield
        finally:
            held.discard(name)


def ensure_tools(*, with_helm: bool = True) -> Tools:
    """Build whatever is missing and return the tool paths. Warm: milliseconds."""
    root = cache_root()
    started = time.monotonic()
    errors: list[str] = []
    k8s_dir: pathlib.Path | None = None
    for version in KUBERNETES_VERSIONS:
        try:
            k8s_dir = build_kubernetes(root, version)
            break
        except BuildError as exc:
            errors.append(str(exc))
            _say(f"kubernetes {version} failed; trying the next fallback")
    if k8s_dir is None:
        raise BuildError("no Kubernetes version could be built:\n" + "\n".join(errors))
    etcd = build_etcd(root)
    kwok, stages = build_kwok(root)
    helm = build_helm(root) if with_helm else None
    elapsed = time.monotonic() - started
    if elapsed > 5:
        _say(f"all tools ready in {elapsed:.0f} s under {root}")
    return Tools(
        kube_apiserver=k8s_dir / "kube-apiserver",
        kube_controller_manager=k8s_dir / "kube-controller-manager",
        kube_scheduler=k8s_dir / "kube-scheduler",
        kubectl=k8s_dir / "kubectl",
        etcd=etcd,
        kwok=kwok,
        kwok_stages=stages,
        helm=helm,
        kubernetes_version=k8s_dir.name.removeprefix("kubernetes-"),
    )


if __name__ == "__main__":
    ensure_tools()
