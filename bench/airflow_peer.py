"""Peer comparison: a 3-task no-op chain (extract >> prepare_features >> train) backfilled over
30 days, max_active_runs 8 and 1, in Railyard (PostgreSQL + Redis, 1 worker × 2 processes,
the scheduler service running) and in Apache Airflow 3 (LocalExecutor, PostgreSQL, api-server
+ scheduler + dag-processor). Reported as Airflow time / Railyard time.

Time = from the backfill being created (Railyard: backfill_create called; Airflow: the
`backfill` row's created_at) to the last run's end; Airflow's CLI wall time is shown too.

Airflow lives in its own virtualenv, never Railyard's:
    python3.11 -m venv bench/.venv-airflow
    bench/.venv-airflow/bin/pip install 'apache-airflow==3.3.2' apache-airflow-providers-postgres psycopg2-binary
Databases `railyard_bench` and `airflow_bench` are created and dropped; every process is
stopped at the end, also on error. SKIP_AIRFLOW=1 runs the Railyard half only.

Run: .venv/bin/python bench/airflow_peer.py
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _benchlib as lib  # noqa: E402

RY_DB = "railyard_bench"
AF_DB = "airflow_bench"
DAYS = 30
LIMITS = (8, 1)
AF_BIN = lib.ROOT / "bench" / ".venv-airflow" / "bin"
AF_HOME = lib.ROOT / "var" / "bench" / "airflow-home"
AF_PORT = 18793
LOG_DIR = lib.ROOT / "var" / "bench"
COMMAND = ".venv/bin/python bench/airflow_peer.py"

# The window: 30 daily 02:15 UTC fires, well in the past, the same in both systems.
FIRST = (datetime.now(UTC) - timedelta(days=DAYS + 10)).replace(hour=0, minute=0, second=0, microsecond=0)
LAST = FIRST + timedelta(days=DAYS - 1)

DAG_FILE = '''
from datetime import datetime, timezone

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG


def noop():
    return None


for _limit in {limits!r}:
    with DAG(
        f"bench_chain_{{_limit}}", schedule="15 2 * * *", catchup=False,
        start_date=datetime.fromisoformat("{start}"), end_date=datetime.fromisoformat("{end}"),
    ) as _dag:
        (PythonOperator(task_id="extract", python_callable=noop)
         >> PythonOperator(task_id="prepare_features", python_callable=noop)
         >> PythonOperator(task_id="train", python_callable=noop))
    globals()[_dag.dag_id] = _dag
'''


# --- Railyard ---------------------------------------------------------------------------
def railyard(procs: lib.Processes, results: dict) -> None:
    env = lib.django_on(RY_DB, broker=lib.REDIS_URL)
    from django.db.models import Max

    from pipelines.models import Backfill, Run
    from pipelines.services import backfill_create
    from scheduler.loop import start_runs_for

    procs.start(lib.scheduler_command(), env=env, log=LOG_DIR / "peer-scheduler.log")
    procs.start(lib.worker_command(), env=env, log=LOG_DIR / "peer-worker.log")
    for limit in (*LIMITS[:1], *LIMITS):  # the first pass warms the worker up and is not reported
        user, (deployment,) = lib.noop_deployments(1, cron="15 2 * * *", max_active_runs=1,
                                                   prefix=f"peer_{limit}_{time.monotonic_ns()}")
        t0 = time.time()
        now = datetime.now(UTC)
        backfill = backfill_create(actor=user, deployment=deployment, start=FIRST.date(), end=LAST.date(),
                                   now=now, max_active_runs=limit)
        start_runs_for(deployment.id, backfill.id, now)  # what the API/view does after creating it
        runs = Run.objects.filter(backfill=backfill)
        assert runs.count() == DAYS, runs.count()
        lib.wait_until(lambda runs=runs: not runs.exclude(state__in=Run.FINISHED_STATES).exists(), timeout=600,
                       interval=0.1, what=f"Railyard backfill max_active_runs {limit}")
        assert runs.filter(state=Run.State.SUCCESS).count() == DAYS
        elapsed = runs.aggregate(last=Max("finished_at"))["last"].timestamp() - t0
        lib.wait_until(lambda backfill=backfill: Backfill.objects.get(pk=backfill.pk).state == Backfill.State.DONE, timeout=30,
                       what="backfill done")
        results[("railyard", limit)] = (elapsed, lib.loadavg())
        print(f"  Railyard backfill {DAYS} days, max_active_runs {limit}: {elapsed:.1f} s  [load {lib.loadavg()}]",
              flush=True)


# --- Airflow ----------------------------------------------------------------------------
def airflow_env() -> dict[str, str]:
    return {
        "AIRFLOW_HOME": str(AF_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(AF_HOME / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": lib.pg_url(AF_DB).replace("postgresql://", "postgresql+psycopg2://"),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(AF_PORT),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{AF_PORT}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{AF_PORT}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        # Railyard's settings must not leak into Airflow's processes.
        "DJANGO_SETTINGS_MODULE": None, "DATABASE_URL": None, "CELERY_BROKER_URL": None,
        "PATH": f"{AF_BIN}:{os.environ.get('PATH', '')}", "VIRTUAL_ENV": str(AF_BIN.parent),
    }


def airflow(procs: lib.Processes, results: dict) -> None:
    import psycopg

    if not (AF_BIN / "airflow").exists():
        raise RuntimeError(f"{AF_BIN / 'airflow'} is missing: install Airflow as this file's docstring says")
    version = subprocess.run([str(AF_BIN / "airflow"), "version"], capture_output=True, text=True,
                             env={k: v for k, v in {**os.environ, **airflow_env()}.items() if v is not None})
    results["airflow_version"] = version.stdout.strip().splitlines()[-1] if version.stdout.strip() else "?"
    shutil.rmtree(AF_HOME, ignore_errors=True)
    (AF_HOME / "dags").mkdir(parents=True)
    (AF_HOME / "dags" / "bench_chain.py").write_text(DAG_FILE.format(
        limits=LIMITS, start=(FIRST - timedelta(days=1)).isoformat(), end=(LAST + timedelta(days=1)).isoformat()))
    lib.create_database(AF_DB)
    env = airflow_env()
    full_env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}

    def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        done = subprocess.run([str(AF_BIN / "airflow"), *args], env=full_env, capture_output=True, text=True,
                              timeout=timeout, cwd=AF_HOME)
        if done.returncode:
            raise RuntimeError(f"airflow {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                               f"{done.stderr[-3000:]}")
        return done

    started = time.time()
    cli("db", "migrate")
    print(f"  Airflow {results['airflow_version']}: db migrate {time.time() - started:.0f} s", flush=True)
    af = str(AF_BIN / "airflow")
    procs.start([af, "api-server", "--port", str(AF_PORT)], env=env, log=LOG_DIR / "airflow-api-server.log")
    procs.start([af, "scheduler"], env=env, log=LOG_DIR / "airflow-scheduler.log")
    procs.start([af, "dag-processor"], env=env, log=LOG_DIR / "airflow-dag-processor.log")

    def api_up():
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{AF_PORT}/api/v2/monitor/health", timeout=2).status == 200
        except Exception:
            return False

    lib.wait_until(api_up, timeout=180, interval=1, what="Airflow api-server (log: var/bench/airflow-api-server.log)")
    with psycopg.connect(lib.pg_url(AF_DB), autocommit=True) as conn:
        dag_ids = [f"bench_chain_{limit}" for limit in LIMITS]
        lib.wait_until(
            lambda: conn.execute("SELECT count(*) FROM serialized_dag WHERE dag_id = ANY(%s)", [dag_ids]).fetchone()[0]
            == len(dag_ids), timeout=300, interval=1, what="DAGs parsed (log: var/bench/airflow-dag-processor.log)")
        print(f"  Airflow up and DAGs parsed after {time.time() - started:.0f} s", flush=True)
        for limit in LIMITS:
            dag_id = f"bench_chain_{limit}"
            t0 = time.time()
            cli("backfill", "create", "--dag-id", dag_id, "--from-date", FIRST.isoformat(),
                "--to-date", (LAST + timedelta(hours=3)).isoformat(), "--max-active-runs", str(limit))

            def progress(dag_id=dag_id):
                return conn.execute(
                    "SELECT count(*), count(*) FILTER (WHERE state = 'success'), count(*) FILTER (WHERE state = 'failed'),"
                    " max(end_date) FROM dag_run WHERE dag_id = %s AND run_type = 'backfill'", [dag_id]).fetchone()

            def finished(dag_id=dag_id):
                total, ok, failed, _ = progress()
                if failed:
                    raise RuntimeError(f"{failed} Airflow backfill runs of {dag_id} failed; see var/bench/airflow-*.log")
                return total == DAYS and ok == DAYS

            lib.wait_until(finished, timeout=900, interval=0.25, what=f"Airflow backfill max_active_runs {limit}")
            total, ok, _, last_end = progress()
            created = conn.execute("SELECT min(created_at) FROM backfill WHERE dag_id = %s", [dag_id]).fetchone()[0]
            elapsed = (last_end - created).total_seconds()
            wall = last_end.timestamp() - t0
            results[("airflow", limit)] = (elapsed, lib.loadavg(), wall)
            print(f"  Airflow backfill {DAYS} days, max_active_runs {limit}: {elapsed:.1f} s from the backfill row "
                  f"({wall:.1f} s from the CLI call)  [load {lib.loadavg()}]", flush=True)


def main() -> int:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    failures: list[str] = []
    print(f"start: {lib.stamp()}; window {FIRST:%Y-%m-%d} .. {LAST:%Y-%m-%d} ({DAYS} runs of 02:15 UTC)")
    procs = lib.Processes()
    lib.create_database(RY_DB)
    lib.flush_redis()
    try:
        with lib.time_limit(2400):
            try:
                railyard(procs, results)
            finally:
                procs.stop()
                if "django.db" in sys.modules and os.environ.get("DJANGO_SETTINGS_MODULE"):
                    from django.db import connections

                    connections.close_all()
            if os.environ.get("SKIP_AIRFLOW"):
                print("  Airflow skipped (SKIP_AIRFLOW set)")
            else:
                try:
                    airflow(procs, results)
                except Exception as exc:  # report what failed, never a figure
                    failures.append(f"Airflow: {type(exc).__name__}: {exc}")
    finally:
        procs.stop()
        lib.drop_database(RY_DB)
        lib.drop_database(AF_DB)
        lib.flush_redis()

    print(f"\n{DAYS}-day backfill of a 3-task no-op chain ({lib.stamp()})")
    print(f"  {'max_active_runs':>15}  {'Railyard [load]':>26}  {'Airflow [load]':>38}  ratio Airflow/Railyard")
    for limit in LIMITS:
        ry = results.get(("railyard", limit))
        af = results.get(("airflow", limit))
        print(f"  {limit:>15}  {f'{ry[0]:.1f} s [{ry[1]}]' if ry else 'n/a':>26}  "
              f"{f'{af[0]:.1f} s ({af[2]:.1f} s CLI) [{af[1]}]' if af else 'n/a':>38}  "
              f"{f'{af[0] / ry[0]:.1f}×' if ry and af else 'n/a'}")
    if "airflow_version" in results:
        print(f"  Airflow version: {results['airflow_version']} (LocalExecutor, default parallelism)")
    for failure in failures:
        print(f"  FAILED: {failure}")
    print(f"Reproduce: {COMMAND}")
    return 1 if failures and not os.environ.get("SKIP_AIRFLOW") else 0


if __name__ == "__main__":
    sys.exit(main())
