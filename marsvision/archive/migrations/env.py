"""Alembic environment: run on the connection ``archive.db.upgrade`` passes in (no alembic.ini)."""

from alembic import context

from marsvision.archive.db import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
