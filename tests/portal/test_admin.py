"""Platform engineers set a connection's secret in the admin; it is stored encrypted and never
rendered back."""

from __future__ import annotations

import pytest

from pipelines.models import Connection, Environment


@pytest.fixture
def admin_client(client, django_user_model, builtins):
    client.force_login(django_user_model.objects.create_superuser("root", password="x" * 12))
    return client


def test_a_secret_set_in_the_admin_is_stored_encrypted_and_never_shown(admin_client):
    dev = Environment.objects.get(slug="dev")
    response = admin_client.post("/admin/pipelines/connection/add/", {
        "environment": dev.pk, "name": "warehouse", "kind": "postgres",
        "config": '{"host": "db", "dbname": "dw", "user": "loader"}', "secret": "pa55-w0rd-xyz",
    })

    assert response.status_code == 302, response.content.decode()[:2000]
    connection = Connection.objects.get(name="warehouse")
    assert connection.has_secret and "pa55-w0rd-xyz" not in connection.secret_encrypted
    page = admin_client.get(f"/admin/pipelines/connection/{connection.pk}/change/").content.decode()
    assert "pa55-w0rd-xyz" not in page and connection.secret_encrypted not in page


def test_saving_without_a_secret_keeps_it(admin_client):
    dev = Environment.objects.get(slug="dev")
    data = {"environment": dev.pk, "name": "warehouse", "kind": "postgres", "config": '{"host": "db"}',
            "secret": "pa55-w0rd-xyz"}
    admin_client.post("/admin/pipelines/connection/add/", data)
    connection = Connection.objects.get(name="warehouse")
    admin_client.post(f"/admin/pipelines/connection/{connection.pk}/change/",
                      {**data, "config": '{"host": "db2"}', "secret": ""})

    connection.refresh_from_db()
    assert connection.config == {"host": "db2"} and connection.has_secret
