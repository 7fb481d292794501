"""Per-deployment secrets a service keeps beside its event store (e.g. the feedback service's
rating-id secret).

A secret comes from a setting when the operator sets one (from a Kubernetes Secret), otherwise it
is generated at first start and kept in the service's own database, so that a local run needs no
configuration and every worker of a deployment uses the same one. Either way the database keeps a
fingerprint of the secret in use: a process started later with another secret stops with a clear
message instead of silently changing what the secret keys (a changed rating-id secret would let a
resident rate twice in a period).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as random_secrets

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from services.kernel.db import lock_schema, read_transaction, write_transaction
from services.kernel.settings import SettingsError

metadata = sa.MetaData()
deployment_secrets = sa.Table(
    "deployment_secrets", metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("generated", sa.Text, nullable=True),  # only for a secret generated here (no setting)
)


def fingerprint(secret: bytes) -> str:
    return hmac.new(secret, b"cocreate-secret-fingerprint", hashlib.sha256).hexdigest()


def deployment_secret(engine: Engine, name: str, configured: str, variable: str) -> bytes:
    """The secret ``name``: ``configured`` (the setting named ``variable``) if set, else the one
    generated for this deployment."""
    # In a write transaction (BEGIN IMMEDIATE on SQLite): a plain connection would read the schema,
    # then need the write lock, and SQLite refuses that upgrade at once ("database is locked",
    # without the busy timeout) while another process of the service is creating its tables.
    with write_transaction(engine) as connection:
        lock_schema(connection)  # with the schema: every process of the service does this at start
        deployment_secrets.create(connection, checkfirst=True)
    t = deployment_secrets
    with read_transaction(engine) as connection:
        row = connection.execute(sa.select(t).where(t.c.name == name)).first()
    if row is None:
        secret = configured.encode() if configured else random_secrets.token_hex(32).encode()
        try:
            with write_transaction(engine) as connection:
                connection.execute(t.insert().values(name=name, fingerprint=fingerprint(secret),
                                                     generated=None if configured else secret.decode()))
        except IntegrityError:
            pass  # another worker started at the same moment: use what it stored
        with read_transaction(engine) as connection:
            row = connection.execute(sa.select(t).where(t.c.name == name)).first()
    secret = configured.encode() if configured else (row.generated or "").encode()
    if not secret:
        raise SettingsError(f"environment variable {variable} must be set: this database's {name} was configured "
                            "by a setting when it was first used, and the same secret is needed to go on")
    if not hmac.compare_digest(fingerprint(secret), row.fingerprint):
        raise SettingsError(f"environment variable {variable} does not hold the {name} this database was started "
                            "with; changing it would change what it keys. Restore the previous value (or, for a "
                            "database generated secret, unset the variable)")
    return secret
