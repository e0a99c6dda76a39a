from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from pipelines import secrets
from pipelines.identifiers import validate_identifier
from pipelines.models import Connection, Environment
from pipelines.services.audit import audit
from pipelines.steps.base import ConnectionSpec, PermanentError


@transaction.atomic
def connection_save(
    *, actor, environment: Environment, name: str, kind: str, config: dict[str, Any], secret: str | None = None
) -> Connection:
    """Create or update a connection; `secret=None` keeps the stored one."""
    try:
        validate_identifier(name, "name")
    except ValueError as exc:
        raise ValidationError({"name": [str(exc).split(": ", 1)[-1]]}) from None
    if kind not in Connection.Kind.values:
        raise ValidationError({"kind": [f"Choose one of: {', '.join(Connection.Kind.values)}."]})
    connection, created = Connection.objects.get_or_create(
        environment=environment, name=name, defaults={"kind": kind, "config": config}
    )
    connection.kind = kind
    connection.config = config
    if secret is not None:
        connection.secret_encrypted = secrets.encrypt(secret)
    connection.save()
    # The audit log records that a secret changed, never its value.
    audit(actor=actor, action="connection.created" if created else "connection.updated", obj=connection,
          details={"environment": environment.slug, "kind": kind, "secret_changed": secret is not None})
    return connection


def connection_resolve(*, environment: Environment, name: str) -> ConnectionSpec:
    try:
        connection = Connection.objects.get(environment=environment, name=name)
    except Connection.DoesNotExist:
        raise PermanentError(
            f"No connection named '{name}' in {environment.slug}. Create it under Admin → Connections."
        ) from None
    return ConnectionSpec(
        name=connection.name, kind=connection.kind, config=dict(connection.config),
        secret=secrets.decrypt(connection.secret_encrypted),
    )
