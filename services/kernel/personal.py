"""Personal information in an append-only log: sealed with a key per person, shredded with the key.

Events are never rewritten, so a personal field (a phone number, a resident's name, a comment that
may identify its author) is stored *sealed*: encrypted with AES-GCM under a key of the person it is
about, for one purpose (``contact``, ``name``, ``content``). The keys live in one key store, a
database of their own (:class:`KeyStore`), outside every event store and never reachable by the
broker; deleting a person's keys makes every sealed copy of their fields unreadable at once — in
the log, on the topics, in read models, in every backup of those — while the events, their ids,
counts, hours and tallies stay as they were ("crypto-shredding"). A correction starts a new key
for the corrected purpose, and the old value is shredded with the old key.

A sealed value is a string (so schemas, typed decoders and read-model columns keep working)::

    pii1.<kid>.<base64url(nonce ‖ ciphertext ‖ tag)>

with the key id and the purpose bound to the ciphertext as associated data: a token moved to
another key id does not open. Readers open tokens where an answer leaves a process; a token whose
key is gone (erased, corrected, or from a key store that never held it) reads :data:`PLACEHOLDER`.
Empty strings are not sealed (an empty comment tells nothing), and a value that is a token already
is kept as it is (a consumer copying another service's field passes the sealed value on).

The key store also keeps the **erasure log** (who was erased, when, why, on whose confirmation):
it survives a restore of any service's database, so that erasures are applied again after one.
"""

from __future__ import annotations

import base64
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.kernel.db import make_engine, read_transaction, write_transaction
from services.kernel.events import to_micros, utc_now
from services.kernel.model import Conflict, mask_phone
from services.kernel.privacy import personal_fields

PLACEHOLDER = "已注销"
PURPOSES = ("contact", "name", "content")
PREFIX = "pii1."
MARK = b"pii1"  # what every sealed string starts with, masked (``pii1m.``) or not: a body without it holds none
TOKEN = re.compile(r"pii1\.(k[0-9a-f]{32})\.([A-Za-z0-9_-]{38,})")
# what readers may meet: a token, or a phone's token masked for a reader who sees it masked
# (``pii1m.``, made by model.mask_phone: it opens as ``138****5678``)
_SHOWN = re.compile(r"pii1(m?)\.(k[0-9a-f]{32})\.([A-Za-z0-9_-]{38,})")
_SHOWN_BYTES = re.compile(rb"pii1m?\.k[0-9a-f]{32}\.[A-Za-z0-9_-]{38,}")
_NONCE_BYTES = 12

metadata = sa.MetaData()

person_keys = sa.Table(
    "person_keys", metadata,
    sa.Column("kid", sa.String(40), primary_key=True),
    sa.Column("person_id", sa.String(100), nullable=False, index=True),
    sa.Column("purpose", sa.String(20), nullable=False),
    sa.Column("key", sa.LargeBinary, nullable=False),
    sa.Column("created_at_us", sa.BigInteger, nullable=False),
    # set when a correction started a newer key for the purpose: still opens the old value until
    # it is shredded (after the correction committed), never seals again
    sa.Column("retired_at_us", sa.BigInteger, nullable=True),
)
shredded_keys = sa.Table(  # what a key id became: a token of one reads the placeholder
    "shredded_keys", metadata,
    sa.Column("kid", sa.String(40), primary_key=True),
    sa.Column("person_id", sa.String(100), nullable=False, index=True),
    sa.Column("purpose", sa.String(20), nullable=False),
    sa.Column("cause", sa.String(20), nullable=False),  # corrected | erased
    sa.Column("shredded_at_us", sa.BigInteger, nullable=False),
)
erasures = sa.Table(  # the erasure log: kept with the keys, outside every service's database
    "erasures", metadata,
    sa.Column("person_id", sa.String(100), primary_key=True),
    sa.Column("reason", sa.String(40), nullable=False),
    sa.Column("requested_at_us", sa.BigInteger, nullable=False),
    sa.Column("confirmed_by", sa.String(100), nullable=False),
    sa.Column("erased_at_us", sa.BigInteger, nullable=False),
)


class PersonErased(Conflict):
    """Nothing personal is sealed for a person who was erased: their keys are gone for good."""

    def __init__(self, person_id: str) -> None:
        super().__init__(f"{person_id} asked for their personal information to be erased",
                         reason="person_erased", details={"person_id": person_id})


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX) and TOKEN.fullmatch(value) is not None


def _aad(kid: str, purpose: str) -> bytes:
    return f"cocreate-pii1|{kid}|{purpose}".encode()


class KeyStore:
    """The keys of every person, per purpose, and the erasure log, in their own database.

    ``cache_seconds``: how long a process keeps a key it has read (keys only ever disappear, so a
    kept key can at most open a value for that long after it was shredded; 0 in tests that erase).
    With a kept key the process also keeps the texts it opened with it (:meth:`kept_texts`), and
    whole answers opened with kept keys (:meth:`kept_body`), for as long as the key (every key of
    the answer) and no longer: a read of the same tokens or the same answer within that time
    decrypts nothing (issue 23: opening the names of a project's page was a tenth of its time).
    When the key's time is up it is read again; found unchanged, it keeps its texts (at most
    ``TEXTS_PER_KEY``, the oldest going first; ``TEXTS_KEPT`` in all), found gone (shredded by
    another process) it loses them with it. Shredding or erasing in this process, and
    :meth:`forget_cached`, drop them at once.
    """

    TEXTS_PER_KEY = 1024  # a person's tokens opened while the key is kept (each seal is a new token)
    TEXTS_KEPT = 100_000  # the texts of all keys together
    BODIES_KEPT = 256  # whole answers opened (kept bytes of a page: the same body again and again)
    BODY_BYTES_KEPT = 262_144

    def __init__(self, url: str, *, cache_seconds: float = 5.0) -> None:
        self.engine = make_engine(url)
        self.cache_seconds = cache_seconds
        # kid -> (person_id, purpose, key) or None (gone), until when it is kept, texts opened with it
        self._kept: dict[str, tuple[tuple[str, str, bytes] | None, float, dict[str, str]]] = {}
        self._active: dict[tuple[str, str], tuple[str, float]] = {}
        self._bodies: dict[bytes, tuple[bytes, float]] = {}  # answer -> opened, until its first key goes
        self._texts = 0  # how many texts all kept keys hold
        self._lock = threading.Lock()

    def create_schema(self) -> None:
        with write_transaction(self.engine) as connection:
            metadata.create_all(connection, checkfirst=True)

    def forget_cached(self) -> None:
        with self._lock:
            self._kept.clear()
            self._texts = 0
            self._active.clear()
            self._bodies.clear()

    # -- keys ---------------------------------------------------------------------------------

    def active_key(self, person_id: str, purpose: str) -> tuple[str, bytes]:
        """The key that seals ``person_id``'s ``purpose`` fields now: made on first use."""
        if purpose not in PURPOSES:
            raise ValueError(f"unknown purpose {purpose!r}; purposes are {', '.join(PURPOSES)}")
        now = time.monotonic()
        with self._lock:
            kid, until = self._active.get((person_id, purpose), ("", 0.0))
            kept = self._kept.get(kid)
        if kid and now < until and kept is not None and kept[0] is not None:
            return kid, kept[0][2]
        with read_transaction(self.engine) as connection:  # a person's key exists but for their first seal
            row = connection.execute(self._current(person_id, purpose)).first()
        if row is not None:  # (erasing deletes every key of the person: an erased person has none)
            return self._activate(person_id, purpose, row.kid, bytes(row.key))
        with write_transaction(self.engine) as connection:
            if connection.execute(sa.select(erasures.c.person_id).where(erasures.c.person_id == person_id)).first():
                raise PersonErased(person_id)
            row = connection.execute(self._current(person_id, purpose)).first()
            if row is None:
                kid, key = "k" + uuid.uuid4().hex, AESGCM.generate_key(bit_length=256)
                connection.execute(person_keys.insert().values(kid=kid, person_id=person_id, purpose=purpose,
                                                               key=key, created_at_us=to_micros(utc_now())))
            else:
                kid, key = row.kid, bytes(row.key)
        return self._activate(person_id, purpose, kid, key)

    @staticmethod
    def _current(person_id: str, purpose: str):
        return sa.select(person_keys.c.kid, person_keys.c.key).where(
            person_keys.c.person_id == person_id, person_keys.c.purpose == purpose,
            person_keys.c.retired_at_us.is_(None))

    def _activate(self, person_id: str, purpose: str, kid: str, key: bytes) -> tuple[str, bytes]:
        self._remember(kid, (person_id, purpose, key))
        with self._lock:
            self._active[(person_id, purpose)] = (kid, time.monotonic() + self.cache_seconds)
        return kid, key

    def keys(self, kids: Iterable[str]) -> dict[str, tuple[str, str, bytes] | None]:
        """``kid -> (person_id, purpose, key)``, or None for a key that is gone (or never was here)."""
        wanted, found, now = set(kids), {}, time.monotonic()
        with self._lock:
            for kid in list(wanted):
                kept = self._kept.get(kid)
                if kept is not None and now < kept[1]:
                    found[kid] = kept[0]
                    wanted.discard(kid)
        if wanted:
            with read_transaction(self.engine) as connection:
                rows = {row.kid: (row.person_id, row.purpose, bytes(row.key)) for row in connection.execute(
                    sa.select(person_keys).where(person_keys.c.kid.in_(sorted(wanted))))}
            for kid in wanted:
                found[kid] = rows.get(kid)
                self._remember(kid, rows.get(kid))
        return found

    def _remember(self, kid: str, value: tuple[str, str, bytes] | None) -> None:
        """Keep ``kid``'s key (or that it is gone) for ``cache_seconds``. A key read again and
        found unchanged keeps the texts opened with it: only a key that is gone, or read anew with
        another value, loses them (issue 23: every five seconds each worker decrypted again every
        name of every page it answered)."""
        if self.cache_seconds > 0:
            with self._lock:
                if len(self._kept) > 50_000:
                    self._kept.clear()
                    self._texts = 0
                before = self._kept.get(kid)
                texts = before[2] if value is not None and before is not None and before[0] == value else {}
                if before is not None and texts is not before[2]:
                    self._texts -= len(before[2])
                self._kept[kid] = (value, time.monotonic() + self.cache_seconds, texts)

    def kept_texts(self, tokens: Iterable[str]) -> dict[str, str]:
        """``token -> text`` for the tokens opened before with a key that is still kept."""
        found, now = {}, time.monotonic()
        with self._lock:
            for token in tokens:
                kept = self._kept.get(token.split(".", 2)[1])
                if kept is not None and now < kept[1]:
                    text = kept[2].get(token)
                    if text is not None:
                        found[token] = text
        return found

    def kept_body(self, body: bytes) -> bytes | None:
        """``body`` opened before, while every key it was opened with is still kept."""
        kept = self._bodies.get(body)
        if kept is not None and time.monotonic() < kept[1]:
            return kept[0]
        return None

    def keep_body(self, body: bytes, opened: bytes, kids: Iterable[str]) -> None:
        """Keep ``body`` opened for as long as all of ``kids`` (the keys it was opened with, or
        found gone) are kept: the first to go takes it with it."""
        if len(body) > self.BODY_BYTES_KEPT:
            return
        with self._lock:
            untils = [kept[1] for kept in map(self._kept.get, kids) if kept is not None]
            if not untils or len(untils) < len(set(kids)):
                return  # a key not kept (cache_seconds 0, or just shredded): nothing to bound it
            if len(self._bodies) >= self.BODIES_KEPT:
                self._bodies.clear()
            self._bodies[body] = (opened, min(untils))

    def keep_text(self, kid: str, token: str, text: str) -> None:
        """Keep what ``token`` opened to, for as long as its key ``kid`` is kept."""
        with self._lock:
            kept = self._kept.get(kid)
            if kept is None or kept[0] is None or token in kept[2]:
                return
            if self._texts >= self.TEXTS_KEPT:  # every key's texts go: rare, and bounded memory
                for other in self._kept.values():
                    other[2].clear()
                self._texts = 0
            elif len(kept[2]) >= self.TEXTS_PER_KEY:  # the key's oldest text goes
                del kept[2][next(iter(kept[2]))]
                self._texts -= 1
            kept[2][token] = text
            self._texts += 1

    def rotate(self, person_id: str, purpose: str) -> list[str]:
        """Retire the person's key for ``purpose`` (a correction): the next seal makes a new key.
        Returns the retired key ids, to :meth:`shred` once the correction has committed."""
        with write_transaction(self.engine) as connection:
            retired = list(connection.execute(sa.select(person_keys.c.kid).where(
                person_keys.c.person_id == person_id, person_keys.c.purpose == purpose,
                person_keys.c.retired_at_us.is_(None))).scalars())
            connection.execute(person_keys.update().where(person_keys.c.kid.in_(retired))
                               .values(retired_at_us=to_micros(utc_now())))
        with self._lock:
            self._active.pop((person_id, purpose), None)
        return retired

    def shred(self, kids: Iterable[str], cause: str) -> int:
        """Delete keys for good (their tokens read the placeholder from now on); returns how many."""
        kids = sorted(set(kids))
        if not kids:
            return 0
        with write_transaction(self.engine) as connection:
            gone = self._shred(connection, sa.select(person_keys).where(person_keys.c.kid.in_(kids)), cause)
        return gone

    def _shred(self, connection, rows_query, cause: str) -> int:
        now = to_micros(utc_now())
        rows = connection.execute(rows_query).all()
        for row in rows:
            connection.execute(shredded_keys.insert().values(kid=row.kid, person_id=row.person_id,
                                                             purpose=row.purpose, cause=cause, shredded_at_us=now))
        if rows:
            connection.execute(person_keys.delete().where(person_keys.c.kid.in_([row.kid for row in rows])))
        with self._lock:
            for row in rows:
                dropped = self._kept.pop(row.kid, None)
                if dropped is not None:
                    self._texts -= len(dropped[2])
                self._active.pop((row.person_id, row.purpose), None)
            if rows:
                self._bodies.clear()  # (which held one of these keys' texts is not worth finding out)
        return len(rows)

    # -- erasure ------------------------------------------------------------------------------

    def erase(self, person_id: str, *, reason: str, requested_at_us: int, confirmed_by: str) -> bool:
        """Delete every key of ``person_id`` and record the erasure, in one transaction; False when
        the person was erased before (nothing changes)."""
        with write_transaction(self.engine) as connection:
            if connection.execute(sa.select(erasures.c.person_id).where(erasures.c.person_id == person_id)).first():
                return False
            self._shred(connection, sa.select(person_keys).where(person_keys.c.person_id == person_id), "erased")
            connection.execute(erasures.insert().values(person_id=person_id, reason=reason,
                                                        requested_at_us=requested_at_us, confirmed_by=confirmed_by,
                                                        erased_at_us=to_micros(utc_now())))
        return True

    def is_erased(self, person_id: str) -> bool:
        with read_transaction(self.engine) as connection:
            return connection.execute(sa.select(erasures.c.person_id).where(
                erasures.c.person_id == person_id)).first() is not None

    def erased(self) -> list[dict[str, Any]]:
        """The erasure log, oldest first."""
        with read_transaction(self.engine) as connection:
            return [dict(row._mapping) for row in connection.execute(
                sa.select(erasures).order_by(erasures.c.erased_at_us, erasures.c.person_id))]


class Sealer:
    """Seals and opens personal fields with the keys of one :class:`KeyStore`."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    def seal(self, value: Any, person_id: str, purpose: str) -> Any:
        """``value`` sealed with ``person_id``'s key for ``purpose``; a value that is not a non-empty
        string, or is sealed already, is returned as it is."""
        if not isinstance(value, str) or not value or is_sealed(value):
            return value
        kid, key = self.keys.active_key(person_id, purpose)
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, value.encode(), _aad(kid, purpose))
        return f"{PREFIX}{kid}.{base64.urlsafe_b64encode(nonce + sealed).rstrip(b'=').decode()}"

    def seal_event(self, event_type: str, data: dict[str, Any], record_owner: str | None = None) -> dict[str, Any]:
        """``data`` of an event about to be stored, with its personal fields (the field policy's,
        :func:`services.kernel.privacy.personal_fields`) sealed with their person's keys."""
        fields = personal_fields(event_type, data, record_owner)
        if not fields:
            return data
        sealed = dict(data)
        for name, purpose, person_id in fields:
            sealed[name] = self.seal(sealed[name], person_id, purpose)
        return sealed

    def open(self, value: Any) -> Any:
        """A sealed value's text (a masked phone's token: the masked number), or :data:`PLACEHOLDER`
        when its key is gone; anything else as it is."""
        if not (isinstance(value, str) and value.startswith("pii1") and _SHOWN.fullmatch(value)):
            return value
        return self._opened({value})[value]

    def open_all(self, value: Any) -> Any:
        """``value`` (JSON data: dicts, lists, strings) with every sealed string opened, one key lookup."""
        tokens: set[str] = set()
        _collect(value, tokens)
        if not tokens:
            return value
        return _replace(value, self._opened(tokens))

    def open_json(self, body: bytes) -> bytes:
        """A JSON document (bytes) with every sealed string in it opened (as JSON string content)."""
        if MARK not in body:
            return body
        kept = self.keys.kept_body(body)
        if kept is not None:
            return kept
        tokens = {match.group(0).decode() for match in _SHOWN_BYTES.finditer(body)}
        opened = self._opened(tokens)
        if not opened:
            return body
        result = _SHOWN_BYTES.sub(lambda match: _json_string_content(opened[match.group(0).decode()]), body)
        self.keys.keep_body(body, result, {token.split(".", 2)[1] for token in tokens})
        return result

    def _opened(self, tokens: set[str]) -> dict[str, str]:
        opened = self.keys.kept_texts(tokens)
        if len(opened) == len(tokens):
            return opened
        matches = {token: _SHOWN.fullmatch(token) for token in tokens if token not in opened}
        keys = self.keys.keys({match.group(2) for match in matches.values() if match})
        opened.update(self.keys.kept_texts(matches))  # what a key read again and found unchanged kept
        for token, match in matches.items():
            if token in opened:
                continue
            found = keys.get(match.group(2)) if match else None
            opened[token] = PLACEHOLDER
            if found is None:
                continue
            _person, purpose, key = found
            raw = base64.urlsafe_b64decode(match.group(3) + "=" * (-len(match.group(3)) % 4))
            try:
                text = AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:],
                                           _aad(match.group(2), purpose)).decode()
            except (InvalidTag, ValueError):
                continue  # not sealed with this key: as unreadable as a shredded one
            opened[token] = mask_phone(text) if match.group(1) else text
            self.keys.keep_text(match.group(2), token, opened[token])
        return opened


def _collect(value: Any, into: set[str]) -> None:
    if isinstance(value, str):
        if value.startswith("pii1") and _SHOWN.fullmatch(value):
            into.add(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            _collect(item, into)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect(item, into)


def _replace(value: Any, opened: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return opened.get(value, value)
    if isinstance(value, Mapping):
        return {key: _replace(item, opened) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_replace(item, opened) for item in value]
    return value


def _json_string_content(text: str) -> bytes:
    """``text`` as it goes between the quotes of a JSON string (UTF-8): what
    ``json.dumps(text, ensure_ascii=False)`` writes there, by msgspec (a write's answer opens a
    handful of names each time: issue 23)."""
    return _ENCODE_STRING(text)[1:-1]


_ENCODE_STRING = msgspec.json.Encoder().encode
