"""Shared plumbing for the scheduling benchmarks: a throwaway PostgreSQL database, Django set
up on it, child processes in their own process groups that are always stopped, /proc readings.

Not a benchmark itself (bench/run.py does not list it)."""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# A Redis database of its own: the test suite uses 15 (Makefile), the ingestion bench may use others.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def stamp() -> str:
    return f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {loadavg()} (1/5/15 min), {os.cpu_count()} cores"


def pg_url(dbname: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + dbname


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_database(name: str) -> None:
    import psycopg

    drop_database(name)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def django_on(dbname: str, *, broker: str | None = None) -> dict[str, str]:
    """Environment for this process and its children; then django.setup() and migrate."""
    env = {
        "DATABASE_URL": pg_url(dbname).replace("postgresql://", "postgres://"),
        "RAILYARD_DEV": "true",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "RAILYARD_VAR_DIR": str(ROOT / "var" / "bench"),
        "PYTHONUNBUFFERED": "1",
    }
    if broker:
        env["CELERY_BROKER_URL"] = broker
    os.environ.update(env)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    return env


class Processes:
    """Children started in their own sessions; stop() kills every group, also at exit or on a signal."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        atexit.register(self.stop)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame):
        raise SystemExit(f"stopped by signal {signum}")

    def start(self, args: list[str], *, env: dict | None = None, log: Path | None = None, cwd=ROOT) -> subprocess.Popen:
        out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115
        full = {**os.environ, **(env or {})}
        full = {k: v for k, v in full.items() if v is not None}  # env={"X": None} unsets X
        proc = subprocess.Popen(args, cwd=cwd, env=full, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop_one(self, proc: subprocess.Popen, timeout: float = 20) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:  # whatever is left of the group (prefork children, uvicorn workers…)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def stop(self) -> None:
        while self.procs:
            self.stop_one(self.procs.pop())


@contextmanager
def time_limit(seconds: int):
    """Bound the whole benchmark: SIGALRM raises, the caller's finally blocks clean up."""

    def _alarm(signum, frame):
        raise TimeoutError(f"benchmark exceeded its {seconds} s budget")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# --- /proc ------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def rss_mib(pid: int) -> float:
    """VmRSS summed over the process and its descendants (shared pages counted in each)."""
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime (+ reaped children's) of each pid, in seconds."""
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return total / CLK_TCK


def wait_until(predicate, *, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# --- Railyard pieces shared by the throughput and Airflow benches -----------------------
def worker_command(app: str = "portal", queues: str = "default", concurrency: int = 2) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", app, "worker", "--loglevel=WARNING", f"--concurrency={concurrency}",
            f"--queues={queues}", "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--prefetch-multiplier=1", "-n", f"bench-{queues}-{os.getpid()}@%h"]


def scheduler_command() -> list[str]:
    return [sys.executable, "manage.py", "scheduler"]


def flush_redis(url: str = REDIS_URL) -> None:
    """The bench's own Redis database (BENCH_REDIS_URL, default db 12) only."""
    import redis

    redis.Redis.from_url(url).flushdb()


def noop_deployments(count: int, *, cron: str, max_active_runs: int, prefix: str, next_due_at=None):
    """`count` unpaused deployments of the built-in no-op chain (extract → prepare_features →
    train), no retries; next_due_at None so the scheduler never creates scheduled runs."""
    from django.contrib.auth import get_user_model

    from pipelines.guardrails import resolve_guardrails
    from pipelines.models import Deployment, Environment, Pipeline, PipelineVersion, Template
    from portal.accounts.models import Team

    user = get_user_model().objects.get_or_create(username="bench")[0]
    team = Team.objects.get_or_create(slug="bench", defaults={"name": "Bench"})[0]
    template = Template.objects.get_or_create(
        slug="noop-chain", defaults={"name": "No-op chain (benchmarks)", "kind": "noop_chain",
                                     "guardrails": {"retries": 0}})[0]
    guardrails = {**resolve_guardrails(template.guardrails), "retries": 0, "max_active_runs": max_active_runs}
    env = Environment.objects.order_by("order").first()
    deployments = []
    for i in range(count):
        pipeline = Pipeline.objects.create(slug=f"{prefix}_{i:04d}", team=team, owner=user, template=template)
        version = PipelineVersion.objects.create(
            pipeline=pipeline, number=1, created_by=user, guardrails=guardrails, template_version=1,
            inputs={"schedule": cron, "timezone": "UTC", "target_table": pipeline.slug})
        deployments.append(Deployment.objects.create(pipeline=pipeline, environment=env, version=version,
                                                     paused=False, next_due_at=next_due_at))
    return user, deployments
