"""Real worker and scheduler processes against the test database, for end-to-end and fault tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def test_database_url() -> str:
    """The URL of the database this test runs on, for processes started by the test."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    host, port = s.get("HOST") or "127.0.0.1", s.get("PORT") or 5432
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    return f"postgres://{s['USER']}{password}@{host}:{port}/{s['NAME']}"


def process_env(extra_env: dict | None = None) -> dict[str, str]:
    """This process's environment pointed at the test database, plus `extra_env`."""
    return {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "RAILYARD_DEV": "true",
        "PYTHONUNBUFFERED": "1",
        **{k: str(v) for k, v in (extra_env or {}).items()},
    }


def start_worker(
    *, concurrency: int = 2, log_path: Path | None = None, extra_env: dict | None = None, name: str | None = None
) -> subprocess.Popen:
    """A `celery -A portal worker` in its own process group (its pid is the group id, so
    `kill_group` reaches the pool children too). Stop it with `stop_process`."""
    log = open(log_path, "a") if log_path else subprocess.DEVNULL  # noqa: SIM115
    node = [f"--hostname={name}@%h"] if name else []
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "worker", "--loglevel=INFO",
             f"--concurrency={concurrency}", "--queues=default", "--without-gossip", "--without-mingle",
             "--without-heartbeat", *node],
            cwd=ROOT, env=process_env(extra_env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    finally:
        if log_path:
            log.close()  # the child has its own descriptor


def start_scheduler(
    *, tick: float = 0.2, stdout_path: Path, stderr_path: Path, extra_env: dict | None = None
) -> subprocess.Popen:
    """`manage.py scheduler --tick S` in its own process group; stderr (logs, tracebacks) apart."""
    with open(stdout_path, "a") as out, open(stderr_path, "a") as err:
        return subprocess.Popen(
            [sys.executable, "manage.py", "scheduler", f"--tick={tick}"],
            cwd=ROOT, env=process_env(extra_env), stdout=out, stderr=err, start_new_session=True,
        )


def kill_group(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to the process and everything in its group (started with start_new_session)."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def stop_process(process: subprocess.Popen, *, timeout: float = 15.0) -> None:
    """SIGTERM (Celery: warm shutdown), then SIGKILL the whole group if it lingers. Also makes
    sure no pool child outlives a parent that was killed on its own."""
    if process.poll() is None:
        kill_group(process, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    kill_group(process, signal.SIGKILL)
    process.wait()


def child_pids(pid: int) -> list[int]:
    """Direct children of a process (Celery's pool processes), read from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its closing parenthesis.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(entry.name))
    return sorted(children)


@contextmanager
def celery_worker(*, concurrency: int = 2, log_path: Path | None = None, extra_env: dict | None = None):
    process = start_worker(concurrency=concurrency, log_path=log_path, extra_env=extra_env)
    try:
        yield process
    finally:
        stop_process(process)


def wait_until(predicate, *, timeout: float = 60.0, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message}")
