"""`kubeinfer-router`: flags, the config file, start-up, reload and shutdown.

Owns the process: read the config file (JSON or YAML) and merge flags over it, build the
table, discovery, scraper, wake hook and proxy, serve on uvloop, start the live sources of a
changed configuration (`reloading`: the ConfigMap watch and the file poll; variant weights
and static endpoints apply live: that is how a canary step or a drain reaches a running
router), and on SIGTERM/SIGINT stop cleanly: readiness false, every held request answered 503
with Retry-After at once, new requests 503, in-flight requests finished within the grace,
then exit. Nothing else: each piece is its own module's job.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import pathlib
import resource
import signal
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from kubeinfer_router import (
    __version__,
    config,
    discovery,
    proxy,
    reloading,
    scraping,
    table,
    telemetry,
    waking,
)

log = logging.getLogger("kubeinfer_router")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kubeinfer-router",
        description="Queue-aware KServe v2 router: least expected wait, held requests at zero "
        "replicas, canary splits.",
    )
    parser.add_argument("--config", type=pathlib.Path, help="JSON or YAML file (see README)")
    parser.add_argument("--listen", help="HOST:PORT to serve on (default 0.0.0.0:8080)")
    parser.add_argument("--policy", choices=[p.value for p in config.Policy])
    parser.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="[VARIANT=]HOST:PORT[:METRICS_PORT]",
        help="a static endpoint (repeatable); the variant defaults to `stable`",
    )
    parser.add_argument(
        "--weight", action="append", default=[], metavar="VARIANT=W", help="a variant's weight"
    )
    parser.add_argument(
        "--no-probe", action="store_true", help="static endpoints are ready without a probe"
    )
    parser.add_argument("--max-queued", type=int, help="held requests before 429 (default 100)")
    parser.add_argument("--hold-timeout", type=float, help="seconds a request is held (120)")
    parser.add_argument("--max-in-flight", type=int, help="proxied requests before 503 (1000)")
    parser.add_argument("--scrape-interval", type=float, help="seconds between scrapes (0.25)")
    parser.add_argument("--wake-webhook", metavar="URL", help="POST here to wake from zero")
    parser.add_argument(
        "--configmap",
        metavar="[NAMESPACE/]NAME",
        help="watch this ConfigMap through the API and apply its key named like the --config "
        "file the moment it changes (the namespace defaults to the discovery namespace)",
    )
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--version", action="version", version=__version__)
    return parser.parse_args(argv)


def parse_text(text: str, *, name: str) -> dict[str, Any]:
    """A config document from a file's (or a ConfigMap key's) text; JSON by a .json name."""
    import yaml

    try:
        doc = json.loads(text) if name.endswith(".json") else yaml.safe_load(text) or {}
    except (ValueError, yaml.YAMLError) as exc:
        raise config.ConfigError(f"{name}: {exc}") from None
    if not isinstance(doc, dict):
        raise config.ConfigError(f"{name}: expected a mapping at the top")
    return doc


def flag_document(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as a config document, to merge over the file's."""
    doc: dict[str, Any] = {}
    for flag, key in (
        ("listen", "listen"),
        ("policy", "policy"),
        ("max_queued", "maxQueued"),
        ("hold_timeout", "holdTimeoutSeconds"),
        ("max_in_flight", "maxInFlight"),
        ("scrape_interval", "scrapeIntervalSeconds"),
    ):
        if getattr(args, flag) is not None:
            doc[key] = getattr(args, flag)
    if args.endpoint:
        doc["variants"] = config.variants_from_endpoint_flags(args.endpoint)
        doc.setdefault("discovery", {})["mode"] = "static"
    if args.no_probe:
        doc.setdefault("discovery", {})["probe"] = False
    if args.wake_webhook:
        doc["wake"] = {"kind": "webhook", "url": args.wake_webhook}
    return doc


def apply_weights(doc: dict[str, Any], weights: Sequence[str]) -> dict[str, Any]:
    for item in weights:
        name, _, value = item.partition("=")
        if not value.isdigit():
            raise config.ConfigError(f"--weight: expected VARIANT=N, got {item!r}")
        for variant in doc.get("variants") or []:
            if variant.get("name") == name:
                variant["weight"] = int(value)
                break
        else:
            raise config.ConfigError(f"--weight: no variant named {name!r}")
    return doc


def load_config(args: argparse.Namespace, text: str | None = None) -> config.RouterConfig:
    """The configuration: `text` (else the --config file's) with the flags merged over it."""
    if text is None and args.config:
        text = args.config.read_text()
    base = parse_text(text, name=str(args.config)) if text is not None else {}
    doc = config.merge(base, flag_document(args))
    return config.parse_document(apply_weights(doc, args.weight))


def build_wake(cfg: config.RouterConfig, api: Any) -> proxy.Wake | None:
    if cfg.wake.kind is config.WakeKind.WEBHOOK:
        assert cfg.wake.url is not None
        return waking.WebhookWake(url=cfg.wake.url)
    if cfg.wake.kind is config.WakeKind.KUBERNETES:
        targets = waking.deployments_to_wake(cfg.variants)
        if not targets:
            raise config.ConfigError("wake.kind kubernetes: no variant names a deployment")
        return waking.ScaleWake(
            api=api or discovery.kube_api(),
            namespace=cfg.wake.namespace or cfg.discovery.namespace,
            deployments=targets,
        )
    return None


def configmap_reference(args: argparse.Namespace, cfg: config.RouterConfig) -> tuple[str, str]:
    """--configmap as (namespace, name); it needs --config, whose file name is the key."""
    if not args.config:
        raise config.ConfigError("--configmap: needs --config (the start-up source and key)")
    return reloading.parse_reference(args.configmap, namespace=cfg.discovery.namespace)


async def serve(args: argparse.Namespace, cfg: config.RouterConfig, text: str | None) -> None:
    endpoints = table.Table(v.name for v in cfg.variants)
    stats = telemetry.Telemetry()
    kube = cfg.discovery.mode is not config.DiscoveryMode.STATIC
    wants_api = kube or args.configmap or cfg.wake.kind is config.WakeKind.KUBERNETES
    api = discovery.kube_api() if wants_api else None
    wake = build_wake(cfg, api)
    router = proxy.Proxy(cfg=cfg, endpoints=endpoints, stats=stats, wake=wake)
    await router.start()
    tasks: list[asyncio.Task[None]] = []
    static: discovery.StaticDiscovery | None = None
    watches: discovery.KubeDiscovery | None = None
    if kube:
        watches = discovery.KubeDiscovery(
            cfg=cfg, endpoints=endpoints, synced=router.synced, api=api
        )
        watches.start()
    else:
        static = discovery.StaticDiscovery(
            cfg=cfg, endpoints=endpoints, synced=router.synced, holding=lambda: router.holds.open
        )
        tasks.append(asyncio.create_task(static.run()))
    scraper = scraping.Scraper(cfg=cfg, endpoints=endpoints)
    tasks.append(asyncio.create_task(scraper.run()))
    configmap: reloading.ConfigMapWatch | None = None
    if args.config and text is not None:
        reloader = reloading.Reloader(
            text=text,
            load=lambda changed: load_config(args, changed),
            router=router,
            endpoints=endpoints,
            finder=static or watches,
            scraper=scraper,
        )
        if args.configmap:
            namespace, name = configmap_reference(args, cfg)
            configmap = reloading.ConfigMapWatch(
                api=api, namespace=namespace, name=name, key=args.config.name, reloader=reloader
            )
            configmap.start()
        poll = reloading.FilePoll(
            path=args.config,
            reloader=reloader,
            watching=lambda: configmap is not None and configmap.live,
        )
        tasks.append(asyncio.create_task(poll.run()))

    runner = web.AppRunner(
        router.build_app(), access_log=None, shutdown_timeout=cfg.shutdown_grace_s
    )
    await runner.setup()
    await web.TCPSite(runner, cfg.listen_host, cfg.listen_port, backlog=1024).start()
    log.info(
        "kubeinfer-router %s on %s:%d: policy %s, discovery %s, variants %s",
        __version__,
        cfg.listen_host,
        cfg.listen_port,
        cfg.policy.value,
        cfg.discovery.mode.value,
        ", ".join(f"{v.name}={v.weight}" for v in cfg.variants),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info(
        "stopping: answering %d held requests 503, finishing %d", router.holds.held, router.active
    )
    # Held and new requests get a clear 503 + Retry-After now; aiohttp's cleanup then stops
    # listening and waits (up to the grace) for the requests already being proxied.
    await router.stop()
    await runner.cleanup()
    for task in tasks:
        task.cancel()
    if watches is not None:
        watches.stop()
    if configmap is not None:
        configmap.stop()
    await router.close()
    if isinstance(wake, waking.WebhookWake):
        await wake.close()
    log.info("stopped")


def raise_file_limit() -> None:
    """Every proxied request holds two sockets: take the hard limit, not the soft default."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_file_limit()
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        # Read once: the text the router starts on is the one the live sources compare with.
        text = args.config.read_text() if args.config else None
        cfg = load_config(args, text)
        if args.configmap:
            configmap_reference(args, cfg)
    except (OSError, ValueError) as exc:
        log.error("configuration: %s", exc)
        return 2
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args, cfg, text))
    else:
        uvloop.run(serve(args, cfg, text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
