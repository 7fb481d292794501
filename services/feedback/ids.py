"""Rating ids: the stored id of a rating's stream and the public id readers see.

Not part of the domain (it encrypts with AES, from ``cryptography``): the command handlers use it to
find a resident's rating of a subject in a period, the API to turn stored ids into public ones and
back. One :class:`RatingIds` per process, keyed by the deployment's rating-id secret
(:func:`resources`).
"""

from __future__ import annotations

import hashlib
import hmac
import threading

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from services.kernel.secrets import deployment_secret


def legacy_rating_id(subject_id: str, period: str, person_id: str, source: str) -> str:
    """How rating streams were named before rating ids were keyed by a secret: anyone who knew
    a person's id could recompute it. Only used to find such a rating again; never shown."""
    key = f"{subject_id}\x1f{period}\x1f{person_id}\x1f{source}"
    return "r" + hashlib.sha256(key.encode()).hexdigest()[:24]


class RatingIds:
    """Rating ids, keyed by the deployment's rating-id secret (``FEEDBACK_RATING_ID_SECRET``).

    - The stream of one resident's rating of one subject in one period (and from one source) is
      deterministic, so that a second submission finds the first: ``r`` + HMAC(secret, key).
      Without the secret nobody can compute it from a person's id.
    - Readers never see a stored id: every view shows the *public* id, an AES encryption of the
      stored id under a key derived from the secret (``r`` + 32 hex digits). It reveals nothing,
      and the API turns it back into the stored id. This covers ratings stored before ids were
      keyed (their stored ids are derivable, see :func:`legacy_rating_id`) as well.
    """

    PUBLIC_LENGTH = 33

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, b"rating-stream-key", hashlib.sha256).digest()
        self._cipher = Cipher(algorithms.AES(hmac.new(secret, b"rating-public-id", hashlib.sha256).digest()),
                              modes.ECB())
        # One encryptor and one decryptor, used again: ECB turns each 16-byte block on its own and
        # keeps nothing between calls (a new context per id took 4.1 µs, 0.25 µs used again; each
        # answer that shows a rating turns one or more). A lock, as a context is one thread's at a time.
        self._encryptor, self._decryptor = self._cipher.encryptor(), self._cipher.decryptor()
        self._lock = threading.Lock()

    def stored(self, subject_id: str, period: str, person_id: str, source: str) -> str:
        key = f"{subject_id}\x1f{period}\x1f{person_id}\x1f{source}"
        return "r" + hmac.new(self._key, key.encode(), hashlib.sha256).hexdigest()[:24]

    def public(self, stored_id: str) -> str:
        block = bytes.fromhex(stored_id[1:]) + b"\0\0\0\0"
        if len(block) != 16:
            raise ValueError(f"not a stored rating id: {stored_id!r}")
        with self._lock:
            return "r" + self._encryptor.update(block).hex()

    def resolve(self, public_id: str) -> str | None:
        """The stored id behind a public id, or None when it is not one."""
        if len(public_id) != self.PUBLIC_LENGTH or not public_id.startswith("r"):
            return None
        try:
            block = bytes.fromhex(public_id[1:])
        except ValueError:
            return None
        if len(block) != 16:
            return None
        with self._lock:
            plain = self._decryptor.update(block)
        return "r" + plain[:12].hex() if plain[12:] == b"\0\0\0\0" else None


def resources(store, settings) -> dict[str, RatingIds]:
    """The process's resources (``Container.resources``): its rating ids, keyed by the deployment's
    rating-id secret (the setting, or the one generated at first start and kept in the database; a
    changed secret stops the process). The command handlers and the API share them."""
    secret = deployment_secret(store.engine, "rating-id secret", settings.rating_id_secret,
                               "FEEDBACK_RATING_ID_SECRET")
    return {"rating_ids": RatingIds(secret)}
