"""Open data (共享 开放数据): a community's public figures as files anyone may download.

Each service publishes, per community, a *dataset*: a few tables, each as a CSV file and a JSON
file, and a Frictionless-style data package (``datapackage.json``) that is their data dictionary —
every column's name, type, unit and meaning in Chinese and English — with the licence (the setting
``<SERVICE>_OPEN_DATA_LICENCE``, CC BY 4.0 by default), the sources and when the data last changed::

    GET /public/open-data/communities/<community_id>/<dataset>/datapackage.json
    GET /public/open-data/communities/<community_id>/<dataset>/<table>.csv
    GET /public/open-data/communities/<community_id>/<dataset>/<table>.json

They are public reads (:func:`services.kernel.web.public`: no token, unknown query keys refused,
the gateway's rate limits apply). What a file may hold is the privacy policy's: each table is a
kind of :data:`services.kernel.privacy.PUBLIC`, its columns exactly that kind's fields in that
order (checked when the table is defined), and every row is passed through
:func:`services.kernel.privacy.public_view`; a count of people below the service's
``PUBLIC_MIN_COUNT`` is an empty cell (JSON ``null``) named in the row's ``suppressed`` column.

The files:

- **CSV**: UTF-8 *with a byte-order mark* (Excel, which most community offices open CSV files
  with, reads UTF-8 without one as GBK and garbles every Chinese character; Python reads it with
  ``encoding="utf-8-sig"``), comma-separated, ``\\r\\n`` line ends (RFC 4180), a header row of the
  column names; empty cell = no value; booleans ``true``/``false``. A text cell starting with
  ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'`` so that a spreadsheet
  shows it as text instead of running it as a formula (titles are typed by residents) — the
  JSON file has the text as written.
- **JSON**: ``{"name", "title", "community_id", "licence", "created", "min_count", "rows": [...]}``,
  each row an object with the columns as keys (numbers as numbers, no value as ``null``).
- **datapackage.json**: ``profile: tabular-data-package``; per table two resources (``<table>``,
  the CSV, and ``<table>-json``) with the schema, their size in bytes and their SHA-256.

HTTP: a file's ``ETag`` is its content's digest and its ``Last-Modified`` the newest change of the
data it is made from, rounded up to the minute (:func:`to_the_minute`; the files' ``created`` says
the same); ``If-None-Match`` / ``If-Modified-Since`` answer 304. ``Cache-Control:
public, max-age=300``. Each app keeps the files it made (:class:`FileCache`) while its event store's
last position is unchanged (and at most :data:`CACHE_SECONDS`), so a crawler reading them again and
again costs one indexed query each time.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import flask
from flask.views import MethodView
from sqlalchemy.engine import Connection

from services.kernel import privacy
from services.kernel.config import OPEN_DATA_LICENCES
from services.kernel.events import format_time
from services.kernel.web import Blueprint, INT64, PUBLIC_QUERY, NoQuery, public, service_container

PREFIX = "/public/open-data/communities"
INTEGER = {"type": "integer", "minimum": INT64[0], "maximum": INT64[1]}  # every store's integer columns
TYPES = {"string": {"type": "string"}, "integer": INTEGER, "number": {"type": "number"},
         "boolean": {"type": "boolean"}, "date": {"type": "string", "format": "date"},
         "yearmonth": {"type": "string", "pattern": r"^\d{4}-\d{2}$"}}
MAX_AGE = 300  # seconds a client or proxy may reuse a file without asking again
CACHE_SECONDS = 60.0  # at most this long an app serves files it made without checking the data again
CACHE_ENTRIES = 64
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclasses.dataclass(frozen=True)
class Field:
    """A column: its name, type (``string``, ``integer``, ``number``, ``boolean``, ``date``,
    ``yearmonth``), meaning in Chinese and English, and unit (``fen`` = 0.01 yuan, ``minutes``, ...)."""

    name: str
    type: str
    zh: str
    en: str
    unit: str | None = None

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"open data field {self.name}: unknown type {self.type!r}")

    def descriptor(self) -> dict[str, Any]:
        described = {"name": self.name, "type": self.type, "description": self.en, "description_zh": self.zh}
        return {**described, "unit": self.unit} if self.unit else described


def suppressed_field() -> Field:
    return Field("suppressed", "string", "因人数过少(少于最小公开数)而留空的列名,以空格分隔",
                 "the columns left empty because they count (or rest on) too few people, space-separated")


@dataclasses.dataclass(frozen=True)
class Table:
    """A file of a dataset (``<name>.csv`` and ``<name>.json``): its rows are records of the privacy
    policy's public kind ``kind``, whose fields must be exactly the columns, in order."""

    name: str
    kind: str
    zh: str
    en: str
    fields: tuple[Field, ...]
    primary_key: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = tuple(f.name for f in self.fields)
        if names != tuple(privacy.PUBLIC.get(self.kind, ())):
            raise ValueError(f"open data table {self.name}: its columns {names} are not the privacy policy's public "
                             f"fields of {self.kind!r} {tuple(privacy.PUBLIC.get(self.kind, ()))}")
        if not re.fullmatch(r"[a-z0-9-]+", self.name):
            raise ValueError(f"open data table name {self.name!r}: lowercase letters, digits and '-'")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"fields": [f.descriptor() for f in self.fields], "missingValues": [""]}
        if self.primary_key:
            schema["primaryKey"] = list(self.primary_key)
        return schema

    def json_schema(self) -> dict[str, Any]:
        """The OpenAPI schema of the JSON file (documented on its route)."""
        row = {"type": "object", "properties": {f.name: {**TYPES[f.type], "nullable": True, "description": f.en}
                                                for f in self.fields}}
        return {"type": "object", "required": ["name", "community_id", "licence", "rows"], "properties": {
            "name": {"type": "string"}, "title": {"type": "object"}, "community_id": {"type": "string"},
            "licence": {"type": "object"}, "created": {"type": "string", "nullable": True},
            "min_count": INTEGER, "datapackage": {"type": "string"},
            "rows": {"type": "array", "items": row}}}

    def public_rows(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """``rows`` as the policy lets anyone see them; a row missing a column is a programming error."""
        shown = []
        for row in rows:
            kept = privacy.public_view(self.kind, row)
            missing = [name for name in self.names if name not in kept]
            if missing:
                raise ValueError(f"open data table {self.name}: a row lacks {missing}")
            # An empty text and no value are one thing in a CSV cell: null in the JSON file too.
            shown.append({name: None if kept[name] == "" else kept[name] for name in self.names})
        return shown


@dataclasses.dataclass(frozen=True)
class Dataset:
    """What one service publishes per community: its tables and where their data comes from."""

    name: str  # the URL segment: projects, volunteers, feedback
    zh: str
    en: str
    tables: tuple[Table, ...]
    sources: tuple[tuple[str, str], ...] = ()  # (title, path of the public API read, with {community_id})

    def files(self) -> list[str]:
        return ["datapackage.json", *(f"{t.name}.{ext}" for t in self.tables for ext in ("csv", "json"))]


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A dataset's rows for one community (table name -> rows) and when its data last changed."""

    rows: Mapping[str, Sequence[Mapping[str, Any]]]
    last_modified: datetime | None


@dataclasses.dataclass(frozen=True)
class Files:
    body: Mapping[str, bytes]  # file name -> content
    last_modified: datetime | None


# -- writing the files ----------------------------------------------------------------------------

def licence(name: str) -> dict[str, str]:
    title, path = OPEN_DATA_LICENCES[name]
    return {"name": name, "title": title, "path": path}


def csv_cell(value: Any, type_: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if type_ == "string" and text.startswith(_FORMULA_START):
        return "'" + text
    return text


def csv_bytes(table: Table, rows: Sequence[Mapping[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(table.names)
    for row in rows:
        writer.writerow([csv_cell(row[f.name], f.type) for f in table.fields])
    return out.getvalue().encode("utf-8-sig")


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"open data cannot hold a {type(value).__name__}")


def _dump(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, indent=1, default=_json_value).encode("utf-8")


def _created(last_modified: datetime | None) -> str | None:
    return format_time(last_modified) if last_modified else None


def to_the_minute(instant: datetime | None) -> datetime | None:
    """When the data last changed, rounded up to the whole minute: what the files and their
    ``Last-Modified`` say, so that they cannot time one resident's act (a co-signature, an
    evaluation) to the second — as the live feed's summaries, on a fixed one-minute grid."""
    if instant is None:
        return None
    floor = instant.replace(second=0, microsecond=0)
    return floor if floor == instant else floor + timedelta(minutes=1)


def render(dataset: Dataset, community_id: str, snapshot: Snapshot, licence_name: str, min_count: int) -> Files:
    """Every file of ``dataset`` for a community: its tables in CSV and JSON, and its data package."""
    body: dict[str, bytes] = {}
    resources = []
    changed = to_the_minute(snapshot.last_modified)
    created = _created(changed)
    for table in dataset.tables:
        rows = table.public_rows(snapshot.rows.get(table.name, ()))
        body[f"{table.name}.csv"] = csv_bytes(table, rows)
        body[f"{table.name}.json"] = _dump({
            "name": table.name, "title": {"zh": table.zh, "en": table.en}, "community_id": community_id,
            "licence": licence(licence_name), "created": created, "min_count": min_count,
            "datapackage": "datapackage.json", "rows": rows})
        common = {"title": table.en, "title_zh": table.zh, "profile": "tabular-data-resource",
                  "schema": table.schema()}
        resources.append({"name": table.name, "path": f"{table.name}.csv", "format": "csv", "mediatype": "text/csv",
                          "encoding": "utf-8", **common, "dialect": {"delimiter": ",", "lineTerminator": "\r\n",
                                                                     "header": True},
                          **_integrity(body[f"{table.name}.csv"])})
        resources.append({"name": f"{table.name}-json", "path": f"{table.name}.json", "format": "json",
                          "mediatype": "application/json", "encoding": "utf-8", **common,
                          "dialect": {"property": "rows", "itemType": "object"},
                          **_integrity(body[f"{table.name}.json"])})
    body["datapackage.json"] = _dump({
        "profile": "tabular-data-package",
        "name": re.sub(r"[^a-z0-9._-]", "-", f"cocreate-{community_id}-{dataset.name}".lower()),
        "title": f"{dataset.en}: {community_id}", "title_zh": f"{dataset.zh}:{community_id}",
        "description": (f"Open data of the co-creation platform (共同缔造) for community {community_id}. Counts of "
                        f"people from 1 to {min_count - 1} are left empty and named in the row's `suppressed` "
                        "column; no person is named. CSV files are UTF-8 with a byte-order mark (for Excel); "
                        "a text cell starting with = + - @ is prefixed with ' (the JSON files hold the text as "
                        "written)."),
        "community_id": community_id, "min_count": min_count, "licenses": [licence(licence_name)],
        "sources": [{"title": title, "path": path.format(community_id=community_id)}
                    for title, path in dataset.sources],
        "created": created, "resources": resources})
    return Files(body, changed)


def _integrity(content: bytes) -> dict[str, Any]:
    return {"bytes": len(content), "hash": "sha256:" + hashlib.sha256(content).hexdigest()}


# -- serving them ---------------------------------------------------------------------------------

class FileCache:
    """The files an app made, per dataset and community, with the store position they were made at:
    served again while the position is unchanged and for at most :data:`CACHE_SECONDS`."""

    def __init__(self, entries: int = CACHE_ENTRIES, seconds: float = CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: OrderedDict[tuple[str, str], tuple[int, float, Files]] = OrderedDict()
        self._lock = threading.Lock()
        self.size, self.seconds, self.clock = entries, seconds, clock

    def get(self, key: tuple[str, str], position: int) -> Files | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None or found[0] != position or self.clock() - found[1] > self.seconds:
                return None
            self._entries.move_to_end(key)
            return found[2]

    def put(self, key: tuple[str, str], position: int, files: Files) -> None:
        with self._lock:
            self._entries[key] = (position, self.clock(), files)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


def _cache() -> FileCache:
    return flask.current_app.extensions.setdefault("cocreate.open_data_cache", FileCache())


def files_of(dataset: Dataset, community_id: str, build: Callable[[Connection, str], Snapshot]) -> Files:
    """The dataset's files for a community, from the app's cache or made now (404 from ``build``
    when the service knows no such community)."""
    container = service_container()
    store, settings = container.store, container.settings
    with store.read_transaction() as connection:
        position = store.last_position(connection=connection)
        files = _cache().get((dataset.name, community_id), position)
        if files is None:
            snapshot = build(connection, community_id)
            files = render(dataset, community_id, snapshot, settings.open_data_licence, settings.public_min_count)
            _cache().put((dataset.name, community_id), position, files)
    return files


CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}


def send(files: Files, community_id: str, name: str) -> flask.Response:
    """One file with its validators (ETag, Last-Modified) and cache headers; 304 when the client's
    copy is current.

    ``Last-Modified`` is the change rounded up to its minute (``to_the_minute``), capped at now while
    that minute is still running. ``If-Modified-Since`` is compared with the whole minute, never with
    the capped stamp: a copy fetched within the minute of the change is current (304) only once the
    minute has passed — the stamp does not move with the clock, and no probe can learn the second
    of the change. ``If-None-Match`` answers 304 at once."""
    content = files.body[name]
    extension = name.rsplit(".", 1)[1]
    response = flask.Response(content, content_type=CONTENT_TYPES[extension])
    response.set_etag(hashlib.sha256(content).hexdigest()[:32])
    changed = files.last_modified.replace(microsecond=0) if files.last_modified is not None else None
    if changed is not None:  # If-Modified-Since is judged against the change's whole minute
        response.last_modified = changed
    response.cache_control.public = True
    response.cache_control.max_age = MAX_AGE
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{community_id}-{name}")
    response.headers["Content-Disposition"] = f'{"attachment" if extension == "csv" else "inline"}; filename="{safe}"'
    response.make_conditional(flask.request)
    if changed is not None:  # ...but the header is never later than now (RFC 9110 8.8.2.1)
        response.last_modified = min(changed, datetime.now(timezone.utc).replace(microsecond=0))
    return response


HEADERS = {
    "ETag": {"description": "the file content's digest: send it back as If-None-Match", "schema": {"type": "string"}},
    "Last-Modified": {"description": "the newest change of the data the file is made from",
                      "schema": {"type": "string"}},
    "Cache-Control": {"description": f"public, max-age={MAX_AGE}", "schema": {"type": "string"}},
}


def blueprint(dataset: Dataset, build: Callable[[Connection, str], Snapshot], description: str) -> Blueprint:
    """The public GETs of ``dataset``'s files: one route per file, so that every file is listed in
    the OpenAPI document (and, through it, in the gateway's)."""
    blp = Blueprint("open_data", f"services.{dataset.name}.open_data", url_prefix=PREFIX, description=description)
    for name in dataset.files():
        table = next((t for t in dataset.tables if name.startswith(t.name + ".")), None)
        _route(blp, dataset, build, name, table)
    return blp


def _route(blp: Blueprint, dataset: Dataset, build, name: str, table: Table | None) -> None:
    def get(self, _query, community_id):
        return send(files_of(dataset, community_id, build), community_id, name)

    if table is None:
        get.__doc__ = (f"开放数据 {dataset.zh}: data package (data dictionary, licence, sources)\n\n"
                       "Frictionless `datapackage.json`: every file of the dataset with its columns' types, units and "
                       "meanings (zh, en), the licence and when the data last changed (no token).")
        schema, content_type = {"type": "object"}, "application/json"
    elif name.endswith(".csv"):
        get.__doc__ = (f"开放数据 {table.zh}: {table.en} (CSV)\n\nUTF-8 with a byte-order mark; columns as "
                       "`datapackage.json` describes them; small counts of people empty (no token).")
        schema, content_type = {"type": "string"}, "text/csv"
    else:
        get.__doc__ = f"开放数据 {table.zh}: {table.en} (JSON)\n\nThe rows of the CSV file as JSON objects (no token)."
        schema, content_type = table.json_schema(), "application/json"
    get = blp.response(200, schema, content_type=content_type, headers=HEADERS)(get)
    get = blp.alt_response(304, description="Not Modified: the copy named by If-None-Match or If-Modified-Since "
                                            "is current")(get)
    get = blp.arguments(NoQuery, **PUBLIC_QUERY)(get)
    get = public(blp)(get)
    endpoint = re.sub(r"[^A-Za-z0-9]", "_", name)
    view = type(f"OpenData_{endpoint}", (MethodView,), {"get": get})
    blp.route(f"/<community_id>/{dataset.name}/{name}", endpoint=endpoint)(view)
