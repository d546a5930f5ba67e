"""Alembic's environment for the store. Tidal runs it through
:func:`tidal.control.store.migrate`, which passes an open connection in
``config.attributes["connection"]``; ``alembic -x url=... upgrade head`` works too."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from tidal.control.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(
        url=context.get_x_argument(as_dictionary=True)["url"], target_metadata=metadata
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        engine = create_engine(context.get_x_argument(as_dictionary=True)["url"])
        with engine.connect() as conn:
            _run(conn)
        engine.dispose()
