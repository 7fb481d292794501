"""Alembic's environment for the kernel's migrations: always run on the connection the caller gives
(:func:`services.kernel.migrations.upgrade`), inside the caller's transaction."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("the kernel's migrations run through services.kernel.migrations.upgrade(connection) "
                     "(python -m services.<service> migrate), not from the alembic command line")
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
