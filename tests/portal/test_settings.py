"""Configuration comes from the environment, strictly: no silent default secret in production."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from portal.env import env_bool

ROOT = Path(__file__).resolve().parents[2]


def load_settings(**env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "RAILYARD_DEV", "SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL")}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; "
                               "print(settings.DATABASES['default']['ENGINE'], settings.CELERY_BROKER_URL)"],
        cwd=ROOT, env={**clean, "DJANGO_SETTINGS_MODULE": "portal.settings", **env},
        capture_output=True, text=True, timeout=60,
    )


def test_the_development_secret_key_is_refused_when_debug_is_off(tmp_path):
    result = load_settings(DEBUG="false", RAILYARD_VAR_DIR=str(tmp_path))

    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_a_real_secret_key_starts_on_the_embedded_default(tmp_path):
    result = load_settings(DEBUG="false", SECRET_KEY="x" * 50, RAILYARD_VAR_DIR=str(tmp_path))

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.sqlite3", f"sqlite:///{tmp_path / 'broker.sqlite3'}"]


def test_database_and_broker_urls_come_from_the_environment(tmp_path):
    result = load_settings(RAILYARD_DEV="true", RAILYARD_VAR_DIR=str(tmp_path),
                           DATABASE_URL="postgres://u@db:5432/railyard", CELERY_BROKER_URL="redis://r:6379/0")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.postgresql", "redis://r:6379/0"]


@pytest.mark.parametrize("value", ["False", "0", "no", "off", ""])
def test_false_means_false(monkeypatch, value):
    monkeypatch.setenv("DEBUG", value)
    assert env_bool("DEBUG") is False


def test_anything_but_true_or_false_is_refused(monkeypatch):
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="DEBUG must be true or false"):
        env_bool("DEBUG")


@pytest.mark.django_db
def test_sqlite_runs_in_wal_mode_with_a_busy_timeout_so_processes_can_share_it():
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    with connection.cursor() as cursor:
        assert cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cursor.execute("PRAGMA busy_timeout").fetchone()[0] >= 30000
