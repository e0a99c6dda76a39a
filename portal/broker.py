"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file, polled every 0.1 s
(kombu's default of 1 s would add a second to every hop of a task chain)."""

from kombu.transport.sqlalchemy import Transport as SQLAlchemyTransport


class EmbeddedTransport(SQLAlchemyTransport):
    polling_interval = 0.1
