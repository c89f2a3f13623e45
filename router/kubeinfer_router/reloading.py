"""Live configuration: where a running router's new router.yaml comes from, and the one path
that applies it.

Two sources, one apply (`Reloader.apply`: parse, flags merged over as at start-up, then
variant weights, static endpoints, the variants discovery watches and the limits go live; a
document that does not parse is logged and the previous configuration kept):
- the ConfigMap the file is mounted from, watched through the API (`--configmap`, a field
  selector on its name, so a Role limited to that one name allows it): a change applies the
  moment the watch delivers it. A kubelet refreshes a mounted ConfigMap only every 60-90 s
  (its sync period plus its cache's TTL), which would put every canary step a minute late.
- the mounted file, its mtime polled every second: the start-up source, and the live source
  where there is no watch (static mode, no API) or while the watch is down. While the watch
  is live a changed file is the kubelet catching up and is ignored, so a late file never
  undoes a newer step the watch has already applied.
The same document is applied once: the watch's first listing usually repeats the file.
Building the configuration from text (and the flags) is `cli`'s; deciding what a document
means is `config`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kubeinfer_router import config, discovery, proxy, scraping, table

log = logging.getLogger("kubeinfer_router.reloading")

FILE_POLL_S = 1.0


class Reloader:
    """Applies a configuration document to the running router, once per distinct text."""

    def __init__(
        self,
        *,
        text: str,
        load: Callable[[str], config.RouterConfig],
        router: proxy.Proxy,
        endpoints: table.Table,
        finder: discovery.StaticDiscovery | discovery.KubeDiscovery | None,
        scraper: scraping.Scraper | None = None,
    ) -> None:
        self.current = text  # the last document applied, or refused (then not logged twice)
        self.load = load
        self.router = router
        self.table = endpoints
        self.finder = finder  # discovery: new static addresses, or watches for new variants
        self.applied = 0  # documents applied since start-up
        self.scraper = scraper  # the queue scrape: per-variant metric names

    def apply(self, text: str, *, source: str) -> bool:
        """Parse `text` and apply it; False when it is the current one or does not parse."""
        if text == self.current:
            return False
        self.current = text
        try:
            cfg = self.load(text)
        except ValueError as exc:
            log.error("config from %s: %s; keeping the previous configuration", source, exc)
            return False
        self.table.set_variants([v.name for v in cfg.variants])
        self.router.reconfigure(cfg)
        if self.finder is not None:
            self.finder.update(cfg)
        if self.scraper is not None:
            self.scraper.reconfigure(cfg)
        self.applied += 1
        log.info(
            "config from %s applied: %s",
            source,
            ", ".join(f"{v.name}={v.weight}" for v in cfg.variants),
        )
        return True


def document_text(listing: Sequence[Mapping[str, Any]], *, name: str, key: str) -> str | None:
    """The ConfigMap `name`'s `key` from a watch listing (None: no such ConfigMap or key)."""
    for obj in listing:
        if (obj.get("metadata") or {}).get("name") != name:
            continue
        value = (obj.get("data") or {}).get(key)
        return value if isinstance(value, str) else None
    return None


def parse_reference(text: str, *, namespace: str) -> tuple[str, str]:
    """`[NAMESPACE/]NAME` -> (namespace, name); the namespace defaults to `namespace`."""
    ns, sep, name = text.rpartition("/")
    if not name or (sep and not ns) or "/" in ns:
        raise config.ConfigError(f"--configmap: expected [NAMESPACE/]NAME, got {text!r}")
    return (ns if sep else namespace), name


class ConfigMapWatch:
    """Watches one ConfigMap (list + watch, by field selector on its name) and applies its key."""

    def __init__(
        self, *, api: Any, namespace: str, name: str, key: str, reloader: Reloader
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.key = key
        self.reloader = reloader
        self.watch: discovery.KubeWatch | None = None
        self._missing_logged = False

    @property
    def live(self) -> bool:
        return self.watch is not None and self.watch.live

    def start(self) -> None:
        from kubernetes import client

        # The field selector is what lets a Role that names this one ConfigMap (resourceNames)
        # allow the list and the watch: without it the request is for the whole collection.
        self.watch = discovery.KubeWatch(
            name=f"configmap/{self.name}",
            list_call=client.CoreV1Api(self.api).list_namespaced_config_map,
            kwargs={"namespace": self.namespace, "field_selector": f"metadata.name={self.name}"},
            on_listing=self._listing,
            loop=asyncio.get_running_loop(),
        )
        self.watch.start()

    def stop(self) -> None:
        if self.watch is not None:
            self.watch.stop()

    def _listing(self, listing: list[dict[str, Any]]) -> None:
        text = document_text(listing, name=self.name, key=self.key)
        where = f"configmap {self.namespace}/{self.name}"
        if text is None:
            # Deleted, or not created yet: what the router runs on stays as it is.
            if not self._missing_logged:
                log.warning("%s has no key %r; keeping the current configuration", where, self.key)
            self._missing_logged = True
            return
        self._missing_logged = False
        self.reloader.apply(text, source=where)


class FilePoll:
    """The mounted file as a source: applied when its mtime changes, unless the watch is live."""

    def __init__(
        self, *, path: pathlib.Path, reloader: Reloader, watching: Callable[[], bool]
    ) -> None:
        self.path = path
        self.reloader = reloader
        self.watching = watching  # true while the ConfigMap watch delivers
        self.seen = _mtime(path)

    def check(self) -> bool:
        """One look at the file: True when it changed and was handed to the reloader."""
        current = _mtime(self.path)
        if current == self.seen:
            return False
        self.seen = current
        if self.watching():
            log.debug("%s changed; the ConfigMap watch is live, so it is not read", self.path)
            return False
        try:
            text = self.path.read_text()
        except OSError as exc:
            log.error("config reload: %s; keeping the previous configuration", exc)
            return False
        self.reloader.apply(text, source=str(self.path))
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FILE_POLL_S)
            self.check()


def _mtime(path: pathlib.Path) -> float | None:
    # A ConfigMap volume swaps a symlink; stat follows it, so the change shows in mtime.
    with contextlib.suppress(OSError):
        return os.stat(path).st_mtime_ns / 1e9
    return None
