"""What the public API offers: every service route under ``/api/v1`` and one OpenAPI document.

The services' own OpenAPI documents are the contract, and the gateway reads them over HTTP, as any
client would: it imports no service's code and is deployed apart from the services.

- **Fetched** from each service's ``GET /openapi.json`` (``GATEWAY_<SERVICE>_URL``) when the
  gateway starts, then every ``GATEWAY_CATALOGUE_REFRESH_SECONDS`` (default 60; every 2 s for a
  service whose routes are not known at all) by a background thread of each gateway process
  (each gunicorn worker), started by the first request the process serves.
  The three services are asked at once, each with a timeout of ``GATEWAY_UPSTREAM_TIMEOUT_SECONDS``
  (at least 5 s: a document is larger than most answers).
- **Kept on disk**: a good document (JSON, an ``openapi`` version and ``paths`` that make valid
  routes) replaces that service's routes and is written atomically (a temporary file renamed
  over the old one) to ``<GATEWAY_CATALOGUE_DIR>/<service>.json`` — by default
  ``<data dir>/gateway/catalogue/`` — whenever it differs from the one kept.
- **A service that does not answer** (or answers something that is not a good document) keeps
  the routes it had. At start they come from its file on disk, the last good document: the
  gateway starts with the services that answer and the last good catalogue of the others, whose
  calls then get the proxy's usual 503 ``service_unavailable`` while they are down.
- **A service neither answering nor on disk** has no routes yet. A request whose path matches no
  known route makes the gateway ask the services whose routes are unknown at once (at most once a
  second per process); if the path still matches nothing it is a **503** ``catalogue_incomplete``
  naming those services, with ``Retry-After`` — the path may be one of theirs, so a 404 would be
  a lie. Once every service's routes are known, a path matching no route is a 404. (The merged
  ``/openapi.json`` asks them at once the same way before it answers.)
- **Routing** from a document: each path template (``/projects/{project_id}``) becomes a rule
  (``/projects/<project_id>``) with the document's methods (GET also answers HEAD); a service's
  admin history routes (``/events``, ``/streams/...``) are published as
  ``/api/v1/admin/<service>/...`` because every service has them; when two services had the
  same route, the first of projects, volunteers, feedback would win.
- **Public reads**: a GET operation whose document says ``security: []`` (the services' public
  reads, ``/public/...``) is recorded on its rule (:attr:`Target.public`), and the gateway lets
  exactly those through without a token (:meth:`Catalogue.is_public`). Nothing else makes a route
  public: not its path, not a ``security: []`` on a write.
- **The merged document**: every service's paths, schemas, responses and tags, the component
  names prefixed by the service (``ProjectsProject``) and the tags by ``<service> · ``.
- **Readiness**: the gateway is ready when its database answers and the routes of at least one
  service are known; ``/readyz`` says for each service whether its routes are ``current`` (its
  last fetch was good), the ``last_good`` ones (the last fetch failed: routes of an earlier
  document, fetched by this process or read from disk) or ``unknown``, with the last error.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import urllib3
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule

PREFIX = "/api/v1"
SERVICES = ("projects", "volunteers", "feedback")
OPERATIONAL = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/static")
ADMIN = ("/events", "/streams")
METHODS = ("get", "post", "put", "patch", "delete")
UNKNOWN_RETRY_SECONDS = 2.0  # how often a service whose routes are unknown is asked again
URGENT_SECONDS = 1.0  # at most one at-once fetch per second (a request matched no route)
MIN_FETCH_TIMEOUT = 5.0
_TEMPLATE = re.compile(r"\{([^{}/]+)\}")
_PARAMETER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# werkzeug compiles each rule from an AST; CPython 3.11 may fail compiling ASTs in several threads
# at once ("AST constructor recursion depth mismatch"): the catalogue compiles under this lock only.
_COMPILING = threading.Lock()

log = logging.getLogger(__name__)


class BadDocument(ValueError):
    """What a service answered is not a document the gateway can route by."""


@dataclass(frozen=True)
class Target:
    service: str
    rule: str  # the service's own rule, e.g. /projects/<project_id>/cosignatures
    public: frozenset[str] = frozenset()  # the methods anyone may call without a token: {"GET"} or none


def is_public_operation(method: str, operation: Any) -> bool:
    """A read its service's document declares open to callers without a token (``security: []``)."""
    return method == "get" and isinstance(operation, Mapping) and operation.get("security") == []


def public_rule(service: str, rule: str) -> str:
    if rule.startswith(ADMIN):
        return f"/admin/{service}{rule}"
    return rule


def service_path(service: str, public_path: str) -> str:
    admin = f"/admin/{service}"
    return public_path[len(admin):] if public_path.startswith(admin + "/") else public_path


def validate(service: str, document: Any) -> None:
    """:class:`BadDocument` unless ``document`` makes routes and can be merged into the gateway's."""
    service_rules(service, document)
    try:
        _renamed_parts({service: document})
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise BadDocument(f"a document that cannot be merged: {type(exc).__name__}: {exc}"[:300]) from None


def service_rules(service: str, document: Mapping[str, Any]) -> list[Rule]:
    """The gateway's rules for a service's document (``{param}`` templates as ``<param>``);
    :class:`BadDocument` when it is not an OpenAPI 3 document with paths that make rules."""
    if not isinstance(document, Mapping) or not str(document.get("openapi", "")).startswith("3."):
        raise BadDocument("not an OpenAPI 3 document")
    paths = document.get("paths")
    components = document.get("components", {})
    if not isinstance(paths, Mapping) or not isinstance(components, Mapping):
        raise BadDocument("an OpenAPI document without a paths object")
    rules = []
    for path, operations in paths.items():
        if not isinstance(path, str) or not path.startswith("/") or not isinstance(operations, Mapping):
            raise BadDocument(f"a bad path in the document: {path!r}")
        parameters = _TEMPLATE.findall(path)
        if ("<" in path or ">" in path or "{" in _TEMPLATE.sub("", path) or "}" in _TEMPLATE.sub("", path)
                or not all(_PARAMETER.fullmatch(p) for p in parameters) or len(set(parameters)) < len(parameters)):
            raise BadDocument(f"the path {path!r} makes no route")
        rule = _TEMPLATE.sub(r"<\1>", path)
        if rule.startswith(OPERATIONAL):
            continue
        methods = sorted(m.upper() for m in operations if m in METHODS)
        open_to_all = frozenset(m.upper() for m, operation in operations.items() if is_public_operation(m, operation))
        if methods:
            rules.append(Rule(public_rule(service, rule), methods=methods, endpoint=Target(service, rule, open_to_all)))
    return rules


@dataclass(frozen=True)
class Known:
    """One service's last good document."""

    document: dict[str, Any]
    fetched_at: str  # when the gateway read it from the service (ISO 8601, UTC)
    origin: str  # "service" (fetched by this process) or "disk" (read from the catalogue directory)


@dataclass
class Attempt:
    ok: bool | None = None  # None: not asked yet
    at: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class _Snapshot:
    """What requests read: replaced whole when a document changes, never changed in place."""

    map: Map
    parts: tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[dict[str, Any]]]
    routes: Mapping[str, int] = field(default_factory=dict)


class Catalogue:
    """The routes and documents of the services, as their last good documents describe them."""

    def __init__(self, services: Mapping[str, str], directory: Path | str | None, *, timeout: float = 5.0,
                 refresh_seconds: float = 60.0, fetch: Callable[[str, str, float], Any] | None = None,
                 start: bool = True) -> None:
        self.urls = {name: url.rstrip("/") for name, url in services.items()}
        self.directory = Path(directory) if directory else None
        self.timeout = max(timeout, MIN_FETCH_TIMEOUT)
        self.refresh_seconds = refresh_seconds
        self._fetch = fetch or self._fetch_over_http
        self._pool: urllib3.PoolManager | None = None
        self.known: dict[str, Known] = {}
        self.attempts: dict[str, Attempt] = {name: Attempt() for name in self.urls}
        self._lock = threading.Lock()  # guards known/attempts and the snapshot swap
        self._fetching = threading.Lock()  # one fetch round at a time per process
        self._last_urgent = float("-inf")
        self._refresher_pid: int | None = None
        self._stop = threading.Event()
        with _COMPILING:
            self._snapshot = _Snapshot(Map([], strict_slashes=False), ({}, {}, {}, []))
        if start:
            self.load_from_disk()
            self.refresh()

    # -- reading ----------------------------------------------------------------------------------

    @property
    def map(self) -> Map:
        return self._snapshot.map

    def adapter(self):
        return self._snapshot.map.bind("gateway")

    def openapi_parts(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        """(paths, schemas, responses, tags) of every known service, renamed for the merged document."""
        return self._snapshot.parts

    def is_public(self, path: str, method: str) -> bool:
        """Whether ``path`` (after ``/api/v1``) with ``method`` (HEAD as GET) is a read its
        service's last good document declares public; False for a path no known route matches."""
        try:
            target = self.adapter().match(path, method)[0]
        except HTTPException:  # no such route (yet), or not this method
            return False
        return ("GET" if method == "HEAD" else method) in target.public

    def unknown(self) -> list[str]:
        """The services whose routes are not known (never answered, nothing on disk)."""
        return [name for name in self.urls if name not in self.known]

    def check_ready(self) -> None:
        """The readiness check: the routes of at least one service are known."""
        if not self.known:
            raise RuntimeError("no service's routes are known yet: none answered GET /openapi.json and the "
                               f"catalogue directory {self.directory} holds none")

    def describe(self) -> dict[str, dict[str, Any]]:
        """Each service's catalogue state, for ``/readyz``."""
        with self._lock:
            routes, states = self._snapshot.routes, {}
            for name in self.urls:
                known, attempt = self.known.get(name), self.attempts[name]
                state = "unknown" if known is None else "current" if attempt.ok else "last_good"
                entry: dict[str, Any] = {"state": state, "routes": routes.get(name, 0)}
                if known is not None:
                    entry.update(fetched_at=known.fetched_at, origin=known.origin)
                if attempt.at is not None:
                    entry["last_attempt_at"] = attempt.at
                if attempt.error:
                    entry["error"] = attempt.error
                states[name] = entry
        return states

    # -- learning ---------------------------------------------------------------------------------

    def load_from_disk(self) -> None:
        """The last good document of every service whose file is in the catalogue directory (for
        the services whose routes are not known yet)."""
        if self.directory is None:
            return
        with self._fetching:
            known = dict(self.known)
            for name in self.urls:
                path = self.directory / f"{name}.json"
                if name in known:
                    continue
                try:
                    kept = json.loads(path.read_text(encoding="utf-8"))
                    document = kept["document"]
                    validate(name, document)
                except FileNotFoundError:
                    continue
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    log.warning("catalogue file unusable", extra={"path": str(path), "error": str(exc)[:300]})
                    continue
                known[name] = Known(document, str(kept.get("fetched_at", "")), "disk")
            self._publish(known, dict(self.attempts), rebuild=known.keys() != self.known.keys())

    def refresh(self, names: list[str] | None = None) -> None:
        """Ask the services (all, or ``names``) for their documents, at once; keep the good ones.
        What requests see (routes, document, states) changes all at once, after the files."""
        names = list(self.urls) if names is None else [n for n in names if n in self.urls]
        if not names:
            return
        with self._fetching:
            with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="catalogue") as pool:
                outcomes = dict(zip(names, pool.map(self._fetch_one, names)))
            known, attempts = dict(self.known), dict(self.attempts)
            changed = False
            for name, (document, error) in outcomes.items():
                now = _now()
                if document is None:
                    if error != attempts[name].error:
                        log.warning("service document not fetched", extra={
                            "service": name, "error": error, "kept": "last good" if name in known else "none"})
                    attempts[name] = Attempt(False, now, error)
                    continue
                attempts[name] = Attempt(True, now, None)
                previous = known.get(name)
                known[name] = Known(document, now, "service")
                same = previous is not None and previous.document == document
                if not same or not self._file_exists(name):
                    self._save(name, document, now)
                if not same:
                    log.info("service document learnt", extra={"service": name,
                                                               "paths": len(document.get("paths", {}))})
                    changed = True
            self._publish(known, attempts, rebuild=changed)

    def refresh_unknown(self) -> bool:
        """Ask at once the services whose routes are unknown (a request matched no route), unless
        that was done less than a second ago; whether anything was asked."""
        with self._lock:
            now = time.monotonic()
            if now - self._last_urgent < URGENT_SECONDS:
                return False
            self._last_urgent = now
        missing = self.unknown()
        if missing:
            self.refresh(missing)
        return bool(missing)

    def ensure_refreshing(self) -> None:
        """Start this process's refresher thread if it has none (called by every request, so that
        each gunicorn worker runs its own whatever was forked)."""
        if self._refresher_pid == os.getpid():
            return
        with self._lock:
            if self._refresher_pid == os.getpid():
                return
            self._refresher_pid = os.getpid()
            self._pool = None  # a pool made before a fork is not this process's
        threading.Thread(target=_refresh_forever, args=(weakref.ref(self), self._stop), daemon=True,
                         name="catalogue-refresh").start()

    def close(self) -> None:
        """Stop the refresher thread (it also stops once the catalogue is gone)."""
        self._stop.set()

    def next_wait(self) -> float:
        return min(self.refresh_seconds, UNKNOWN_RETRY_SECONDS) if self.unknown() else self.refresh_seconds

    # -- internals --------------------------------------------------------------------------------

    def _fetch_one(self, name: str) -> tuple[dict[str, Any] | None, str | None]:
        try:
            document = self._fetch(name, self.urls[name] + "/openapi.json", self.timeout)
            validate(name, document)
            return document, None
        except BadDocument as exc:
            return None, str(exc)
        except Exception as exc:  # down, slow, not JSON: the last good document stays
            return None, _describe(exc)

    def _fetch_over_http(self, _name: str, url: str, timeout: float) -> Any:
        with self._lock:
            if self._pool is None:
                self._pool = urllib3.PoolManager(num_pools=4, maxsize=2, retries=False)
            pool = self._pool
        reply = pool.request("GET", url, headers={"Accept": "application/json"},
                                   timeout=urllib3.Timeout(total=timeout), redirect=False)
        if reply.status != 200:
            raise BadDocument(f"GET /openapi.json answered {reply.status}")
        try:
            return json.loads(reply.data)
        except ValueError:
            raise BadDocument("GET /openapi.json answered something that is not JSON") from None

    def _file_exists(self, name: str) -> bool:
        return self.directory is not None and (self.directory / f"{name}.json").exists()

    def _save(self, name: str, document: dict[str, Any], fetched_at: str) -> None:
        if self.directory is None:
            return
        try:
            save_document(self.directory, name, document, url=self.urls[name] + "/openapi.json",
                          fetched_at=fetched_at)
        except OSError as exc:  # a read-only or full disk: the routes in memory still serve
            log.warning("catalogue file not written", extra={"service": name, "error": str(exc)[:300]})

    def _publish(self, known: dict[str, Known], attempts: dict[str, Attempt], *, rebuild: bool) -> None:
        snapshot = self._snapshot
        if rebuild:
            documents = {name: known[name].document for name in self.urls if name in known}
            rules, routes = [], {}
            for name, document in documents.items():
                made = service_rules(name, document)
                rules += made
                routes[name] = len(made)
            try:
                with _COMPILING:
                    routing = Map(rules, strict_slashes=False)
            except Exception:  # nothing changes: the next refresh tries again
                log.exception("catalogue routes not built")
                return
            snapshot = _Snapshot(routing, _renamed_parts(documents), routes)
        with self._lock:
            self.known, self.attempts, self._snapshot = known, attempts, snapshot


def save_document(directory: Path, service: str, document: Mapping[str, Any], *, url: str = "",
                  fetched_at: str | None = None) -> Path:
    """Keep ``document`` as ``service``'s last good one in ``directory`` (``<service>.json``, the
    file a gateway reads at start), written atomically."""
    path = Path(directory) / f"{service}.json"
    text = json.dumps({"service": service, "url": url, "fetched_at": fetched_at or _now(), "document": document},
                      ensure_ascii=False, separators=(",", ":"))
    save_atomically(path, text)
    return path


def save_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def _refresh_forever(ref: "weakref.ref[Catalogue]", stop: threading.Event) -> None:
    while True:
        catalogue = ref()
        if catalogue is None:
            return
        wait = catalogue.next_wait()
        del catalogue  # held only while working, so that a dropped app's catalogue can go
        if stop.wait(wait):
            return
        catalogue = ref()
        if catalogue is None:
            return
        try:
            catalogue.refresh()
        except Exception:
            log.exception("catalogue refresh failed")
        del catalogue


def _renamed_parts(documents: Mapping[str, Mapping[str, Any]]):
    paths, schemas, responses, tags = {}, {}, {}, []
    for name, spec in documents.items():
        label = name.capitalize()
        components = spec.get("components", {})
        text = json.dumps({"paths": spec.get("paths", {}), "schemas": components.get("schemas", {}),
                           "responses": components.get("responses", {})}, ensure_ascii=False)
        for schema in components.get("schemas", {}):
            text = text.replace(f'"#/components/schemas/{schema}"', f'"#/components/schemas/{label}{schema}"')
        for response in components.get("responses", {}):
            text = text.replace(f'"#/components/responses/{response}"',
                                f'"#/components/responses/{label}{response}"')
        renamed = json.loads(text)
        for path, operations in renamed["paths"].items():
            if _TEMPLATE.sub(r"<\1>", path).startswith(OPERATIONAL):
                continue
            for method, operation in operations.items():
                if method in METHODS:
                    operation["tags"] = [f"{name} · {tag}" for tag in operation.get("tags", [])]
                    operation["operationId"] = f"{name}_{method}_{path}".replace("/", "_").replace(
                        "{", "").replace("}", "")
                    if method == "post":
                        operation.setdefault("parameters", []).append(IDEMPOTENCY_KEY)
            paths[PREFIX + public_rule(name, path)] = operations
        schemas.update({f"{label}{k}": v for k, v in renamed["schemas"].items()})
        responses.update({f"{label}{k}": v for k, v in renamed["responses"].items()})
        tags += [{**tag, "name": f"{name} · {tag['name']}"} for tag in spec.get("tags", [])]
    return paths, schemas, responses, tags


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    "description": "Send the same key again to retry safely: the first answer is returned again "
                   "(kept 24 hours); another body with the same key is a 422 (idempotency_key_reused)."}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe(exc: Exception) -> str:
    # NewConnectionError subclasses ConnectTimeoutError in urllib3 2: test it first.
    if isinstance(exc, urllib3.exceptions.NewConnectionError | ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"[:300]
