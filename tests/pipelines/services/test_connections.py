"""Secrets are encrypted at rest and come back only inside the worker's ConnectionSpec."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from pipelines import secrets
from pipelines.models import AuditEvent, Connection, Environment
from pipelines.services import connection_resolve
from tests import factories


def test_a_secret_is_stored_encrypted_and_resolved_for_the_worker(builtins):
    factories.make_connection("warehouse", "postgres", {"host": "db"}, secret="hunter2-hunter2")

    stored = Connection.objects.get(name="warehouse")
    assert "hunter2" not in stored.secret_encrypted
    assert stored.has_secret
    spec = connection_resolve(environment=Environment.objects.get(slug="dev"), name="warehouse")
    assert spec.secret == "hunter2-hunter2"


def test_saving_without_a_secret_keeps_the_stored_one(builtins):
    factories.make_connection("warehouse", "postgres", {"host": "db"}, secret="hunter2-hunter2")
    factories.make_connection("warehouse", "postgres", {"host": "db2"})

    spec = connection_resolve(environment=Environment.objects.get(slug="dev"), name="warehouse")
    assert (spec.config["host"], spec.secret) == ("db2", "hunter2-hunter2")


def test_the_audit_log_records_that_a_secret_changed_but_not_its_value(builtins):
    factories.make_connection("warehouse", "postgres", {"host": "db"}, secret="hunter2-hunter2")

    event = AuditEvent.objects.get(action="connection.created")
    assert event.details["secret_changed"] is True
    assert "hunter2" not in str(event.details)


def test_connections_resolve_per_environment(builtins):
    factories.make_connection("warehouse", "sqlite", {"path": "dev.sqlite3"})
    factories.make_connection("warehouse", "postgres", {"host": "prod-db"}, environment="prod")

    assert connection_resolve(environment=Environment.objects.get(slug="prod"), name="warehouse").kind == "postgres"
    assert connection_resolve(environment=Environment.objects.get(slug="dev"), name="warehouse").kind == "sqlite"


def test_keys_rotate_old_tokens_still_decrypt(settings):
    old, new = "Jx0x3b9nTq9pVq0s0Wm3mG7QG0y9bqk1Zx2pQ6v1H0A=", "mZC4HOq0S-9b2bZ8iQj1m8m9h3U4c1sQ0n9gQm3Yb9k="
    settings.RAILYARD_ENCRYPTION_KEYS = [old]
    token = secrets.encrypt("s3cret")
    settings.RAILYARD_ENCRYPTION_KEYS = [new, old]

    assert secrets.decrypt(token) == "s3cret"


def test_a_missing_key_is_a_configuration_error_that_never_shows_the_secret(settings):
    settings.RAILYARD_ENCRYPTION_KEYS = ["mZC4HOq0S-9b2bZ8iQj1m8m9h3U4c1sQ0n9gQm3Yb9k="]
    token = secrets.encrypt("s3cret")
    settings.RAILYARD_ENCRYPTION_KEYS = ["Jx0x3b9nTq9pVq0s0Wm3mG7QG0y9bqk1Zx2pQ6v1H0A="]

    with pytest.raises(ImproperlyConfigured) as error:
        secrets.decrypt(token)
    assert "s3cret" not in str(error.value)
