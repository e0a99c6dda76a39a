"""Execution throughput: 1,000 runs of the 3-task no-op chain through one Celery worker with
2 processes (Redis broker, PostgreSQL database), next to raw Celery running 3,000 no-op tasks
on the same broker and 2 processes (the ceiling). Also: trigger → success latency of one run
(median of 20), RSS of web / scheduler / worker, and idle CPU over 60 s.

Uses a throwaway database `railyard_bench` and Redis database 12 (BENCH_REDIS_URL), both
emptied at the end; every process it starts is stopped, also on error or timeout.
IDLE_SECONDS=10 shortens the idle measurement for a quick check.

Run: .venv/bin/python bench/throughput_bench.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from celery import Celery, chain  # noqa: E402

from bench import _benchlib as lib  # noqa: E402

DB = "railyard_bench"
RUNS = 1_000
DEPLOYMENTS = 100  # 10 runs each, all startable at once
TASKS_PER_RUN = 3
LATENCY_SAMPLES = 20
IDLE_SECONDS = int(os.environ.get("IDLE_SECONDS", 60))
WEB_PORT = 18731
COMMAND = ".venv/bin/python bench/throughput_bench.py"
LOG_DIR = lib.ROOT / "var" / "bench"

# --- raw Celery: the ceiling, same broker, same acks/prefetch settings as Railyard -----------
raw_app = Celery("rawbench", broker=lib.REDIS_URL)
raw_app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
                    task_ignore_result=True, worker_hijack_root_logger=False, task_default_queue="rawbench",
                    broker_connection_retry_on_startup=True)
_redis = None


@raw_app.task(name="rawbench.noop")
def raw_noop(count: bool = False) -> None:
    global _redis
    if count:  # the only work: tell the bench one more unit is done
        if _redis is None:
            import redis

            _redis = redis.Redis.from_url(lib.REDIS_URL)
        _redis.incr("rawbench:done")


class Results(list):
    """Printed as they come, so a failure later still shows what was measured."""

    def append(self, item) -> None:
        print(f"  {item[0]}: {item[1]}", flush=True)
        super().append(item)


def raw_celery(procs: lib.Processes, results: list) -> dict:
    import redis

    r = redis.Redis.from_url(lib.REDIS_URL)
    worker = procs.start(lib.worker_command("bench.throughput_bench:raw_app", "rawbench"),
                         env={"DJANGO_SETTINGS_MODULE": None}, log=LOG_DIR / "raw-worker.log")
    out = {}
    try:
        def run(label: str, send, expected: int) -> float:
            r.set("rawbench:done", 0)
            started = time.time()
            send()
            lib.wait_until(lambda: int(r.get("rawbench:done")) >= expected, timeout=600, interval=0.01,
                           what=f"raw celery {label}")
            return time.time() - started

        run("warm-up", lambda: [raw_noop.apply_async(kwargs={"count": True}, queue="rawbench") for _ in range(20)], 20)
        n = RUNS * TASKS_PER_RUN
        wall = run("independent", lambda: [raw_noop.apply_async(kwargs={"count": True}, queue="rawbench")
                                           for _ in range(n)], n)
        out["independent"] = wall
        results.append((f"raw Celery, {n} independent no-op tasks", f"{wall:.1f} s = {n / wall:.0f} tasks/s "
                        f"({wall / n * 1000:.2f} ms/task)  [load {lib.loadavg()}]"))
        sig = chain(raw_noop.si(), raw_noop.si(), raw_noop.si(count=True))
        wall = run("chains", lambda: [sig.apply_async(queue="rawbench") for _ in range(RUNS)], RUNS)
        out["chains"] = wall
        results.append((f"raw Celery, {RUNS} chains of 3 no-op tasks", f"{wall:.1f} s = {RUNS / wall:.1f} chains/s "
                        f"({wall / n * 1000:.2f} ms/task)  [load {lib.loadavg()}]"))
    finally:
        procs.stop_one(worker)
        procs.procs.remove(worker)
    return out


def create_runs(deployments, base: datetime, per_deployment: int, step: timedelta):
    from django.db import transaction

    from pipelines.models import Run
    from pipelines.services.runs import run_create

    with transaction.atomic():
        for d in deployments:
            for i in range(per_deployment):
                run_create(deployment=d, logical_date=base + i * step, now=datetime.now(UTC),
                           trigger=Run.Trigger.MANUAL)


def throughput(results: list) -> float:
    from django.db.models import Max, Min

    from pipelines.models import Run, TaskRun
    from scheduler import loop

    _, deployments = lib.noop_deployments(DEPLOYMENTS, cron="*/5 * * * *", max_active_runs=RUNS // DEPLOYMENTS,
                                          prefix="tput")
    create_runs(deployments, datetime(2026, 1, 1, tzinfo=UTC), RUNS // DEPLOYMENTS, timedelta(minutes=5))
    runs = Run.objects.filter(deployment__in=deployments)
    assert runs.count() == RUNS
    started = time.time()
    started_count = loop.start_queued_runs(datetime.now(UTC))  # what the scheduler's tick does
    start_wall = time.time() - started
    lib.wait_until(lambda: not runs.exclude(state__in=Run.FINISHED_STATES).exists(), timeout=900, interval=0.25,
                   what="1,000 runs to finish")
    agg = runs.aggregate(last=Max("finished_at"), first=Min("started_at"))
    wall = agg["last"].timestamp() - started
    ok = runs.filter(state=Run.State.SUCCESS).count()
    tasks = TaskRun.objects.filter(run__in=runs, state=TaskRun.State.SUCCESS).count()
    assert ok == RUNS and tasks == RUNS * TASKS_PER_RUN, (ok, tasks)
    results.append((f"Railyard, {RUNS} runs × {TASKS_PER_RUN} no-op tasks ({DEPLOYMENTS} deployments)",
                    f"{wall:.1f} s = {RUNS / wall:.1f} runs/s, {wall / tasks * 1000:.2f} ms/task wall  "
                    f"[load {lib.loadavg()}]"))
    trs = TaskRun.objects.filter(run__in=runs)
    inside = [(f - s).total_seconds() for s, f in trs.values_list("started_at", "finished_at")]
    waits = [(s - q).total_seconds() for q, s in trs.values_list("queued_at", "started_at")]
    results.append(("  per task: claim → step done (started_at → finished_at), median / p95",
                    f"{statistics.median(inside) * 1000:.1f} / {lib.percentile(inside, 95) * 1000:.1f} ms; "
                    f"queued → claimed median {statistics.median(waits):.1f} s (backlog)"))
    results.append(("  of which starting the 1,000 runs (start_queued_runs, in-process)",
                    f"{start_wall:.1f} s for {started_count} runs (the scheduler process may start some too)"))
    return wall


def latency(results: list) -> None:
    from django.utils import timezone

    from pipelines.models import Run
    from pipelines.services import run_trigger
    from scheduler.loop import start_run_now

    user, (deployment,) = lib.noop_deployments(1, cron="15 2 * * *", max_active_runs=1, prefix="latency")
    samples, walls = [], []
    for i in range(LATENCY_SAMPLES + 2):  # two warm-ups
        now = timezone.now()
        t0 = time.time()
        run = run_trigger(actor=user, deployment=deployment, logical_date=datetime(2026, 1, 1, 2, 15, tzinfo=UTC)
                          + timedelta(days=i), now=now)
        start_run_now(run, now)
        lib.wait_until(lambda run=run: Run.objects.filter(pk=run.pk, state=Run.State.SUCCESS).exists(), timeout=60,
                       interval=0.005, what="triggered run")
        wall = time.time() - t0
        run.refresh_from_db()
        if i >= 2:
            samples.append((run.finished_at - now).total_seconds())
            walls.append(wall)
    results.append((f"trigger → success, one 3-task run (median of {LATENCY_SAMPLES})",
                    f"{statistics.median(samples) * 1000:.0f} ms (p90 {lib.percentile(samples, 90) * 1000:.0f} ms, "
                    f"min {min(samples) * 1000:.0f} ms; seen by a 5 ms poll: {statistics.median(walls) * 1000:.0f} ms)"
                    f"  [load {lib.loadavg()}]"))


def footprint(procs: lib.Processes, scheduler, worker, results: list) -> None:
    import psycopg

    web = procs.start([sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{WEB_PORT}"],
                      log=LOG_DIR / "web.log")

    def web_up():
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{WEB_PORT}/accounts/login/", timeout=2).status < 500
        except Exception:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{WEB_PORT}/", timeout=2).status < 500
            except Exception:
                return False

    lib.wait_until(web_up, timeout=60, interval=0.3, what="web server")
    for _ in range(5):
        web_up()
    results.append(("RSS web (runserver --noreload, after a few requests)", f"{lib.rss_mib(web.pid):.0f} MiB"))
    results.append(("RSS scheduler (manage.py scheduler)", f"{lib.rss_mib(scheduler.pid):.0f} MiB"))
    results.append(("RSS worker (celery main + 2 prefork children)", f"{lib.rss_mib(worker.pid):.0f} MiB"))

    time.sleep(3)  # let the last work settle
    sql = ("SELECT xact_commit + xact_rollback, sessions, active_time, session_time FROM pg_stat_database "
           "WHERE datname = %s")
    with psycopg.connect(lib.PG_ADMIN_URL, autocommit=True) as conn:
        def backends():
            return [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [DB])]

        def pg_stats():
            conn.execute("SELECT pg_stat_force_next_flush()")
            return conn.execute(sql, [DB]).fetchone()

        ours = lib.tree(scheduler.pid) + lib.tree(worker.pid)
        pg_before, stats_before = backends(), pg_stats()
        cpu_before = lib.cpu_seconds(ours)
        pg_cpu_before = {p: lib.cpu_seconds([p]) for p in pg_before}
        load_before = lib.loadavg()
        time.sleep(IDLE_SECONDS)
        cpu = lib.cpu_seconds(ours) - cpu_before
        pg_after, stats_after = backends(), pg_stats()
        kept = [p for p in pg_before if p in pg_after]
        pg_cpu = sum(lib.cpu_seconds([p]) - pg_cpu_before[p] for p in kept)
    d = [b - a for a, b in zip(stats_before, stats_after, strict=True)]
    results.append((f"idle CPU over {IDLE_SECONDS} s, scheduler + worker (incl. children)",
                    f"{cpu:.2f} CPU-s = {cpu / IDLE_SECONDS * 100:.2f} % of one core  [load {load_before}]"))
    results.append((f"idle PostgreSQL over {IDLE_SECONDS} s, database {DB}",
                    f"{d[0] / IDLE_SECONDS:.1f} transactions/s, {d[1]} new sessions (connections), "
                    f"active {d[2] / 1000:.2f} s; CPU of the {len(kept)} backends alive throughout: {pg_cpu:.2f} s"))
    procs.stop_one(web)
    procs.procs.remove(web)


def main() -> int:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    lib.create_database(DB)
    lib.flush_redis()
    procs = lib.Processes()
    try:
        with lib.time_limit(1500):
            return run(procs)
    finally:
        procs.stop()
        from django.db import connections

        connections.close_all()
        lib.drop_database(DB)
        lib.flush_redis()


def run(procs: lib.Processes) -> int:
    env = lib.django_on(DB, broker=lib.REDIS_URL)
    results = Results()
    print(f"start: {lib.stamp()}")
    scheduler = procs.start(lib.scheduler_command(), env=env, log=LOG_DIR / "scheduler.log")
    worker = procs.start(lib.worker_command(), env=env, log=LOG_DIR / "worker.log")
    latency(results)  # also the warm-up: the worker is up once a run succeeds
    ry_wall = throughput(results)
    footprint(procs, scheduler, worker, results)
    procs.stop_one(worker)
    procs.procs.remove(worker)
    raw = raw_celery(procs, results)
    results.append(("Railyard / raw Celery wall time (independent tasks | chains)",
                    f"{ry_wall / raw['independent']:.1f}× | {ry_wall / raw['chains']:.1f}×"))

    print(f"\nThroughput on PostgreSQL + Redis, 1 worker × 2 processes ({lib.stamp()})")
    width = max(len(k) for k, _ in results)
    for key, value in results:
        print(f"  {key:<{width}}  {value}")
    print(f"Reproduce: {COMMAND}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
