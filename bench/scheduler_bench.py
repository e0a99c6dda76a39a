"""Scheduler tick cost at 10,000 deployments on PostgreSQL, 1,000 of them due at once.

Measures one create_due_runs(now), one full tick(now), the lag from due time to each run's
first task being handed to the broker (p50/p95/max), and ticks with nothing due: with no runs,
with 1,000 running, and with 1,000,000 finished runs of history (plus the query plan of the
tick's run-group query, written with the cProfile to var/bench/scheduler_tick.prof.txt).
The broker send itself is excluded: scheduler.dispatch.send is replaced by a collector that
stamps the wall time at which the send would happen (on commit); bench/throughput_bench.py
measures the broker. Uses a throwaway database `railyard_bench` (dropped at the end).

Run: .venv/bin/python bench/scheduler_bench.py
"""

from __future__ import annotations

import cProfile
import io
import pstats
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _benchlib as lib  # noqa: E402

DB = "railyard_bench"
DEPLOYMENTS = 10_000
DUE = 1_000
IDLE_TICKS = 20
COMMAND = ".venv/bin/python bench/scheduler_bench.py"
SCHEDULES = [  # (cron, share)
    ("30 2 * * *", 4),     # daily
    ("15 * * * *", 3),     # hourly
    ("*/15 * * * *", 2),   # every 15 minutes
    ("0 6 * * 1", 1),      # weekly
]
ZONES = ["UTC", "Europe/London", "America/New_York", "Asia/Tokyo", "Australia/Sydney", "Asia/Kolkata"]


def populate(now):
    from django.contrib.auth import get_user_model

    from pipelines.cron import Schedule
    from pipelines.guardrails import resolve_guardrails
    from pipelines.models import Deployment, Environment, Pipeline, PipelineVersion, Template
    from portal.accounts.models import Team

    rng = random.Random(42)
    user = get_user_model().objects.create_user(username="bench", password="bench-password-1")
    teams = Team.objects.bulk_create(Team(slug=f"team-{i}", name=f"Team {i}") for i in range(20))
    template = Template.objects.get(slug="partitioned-ingestion")
    guardrails = resolve_guardrails(template.guardrails)
    env = Environment.objects.order_by("order").first()
    crons = [c for c, share in SCHEDULES for _ in range(share)]
    specs = [(rng.choice(crons), rng.choice(ZONES)) for _ in range(DEPLOYMENTS)]
    pipelines = Pipeline.objects.bulk_create(
        (Pipeline(slug=f"bench_{i:05d}", team=teams[i % len(teams)], owner=user, template=template)
         for i in range(DEPLOYMENTS)), batch_size=2000)
    versions = PipelineVersion.objects.bulk_create(
        (PipelineVersion(pipeline=p, number=1, created_by=user, guardrails=guardrails,
                         template_version=template.version,
                         inputs={"schedule": cron, "timezone": zone, "target_table": p.slug,
                                 "source_connection": "landing", "source": "{{ ds }}/x.csv",
                                 "primary_key": "id", "partition_column": "dt",
                                 "warehouse_connection": "warehouse"})
         for p, (cron, zone) in zip(pipelines, specs, strict=True)), batch_size=2000)
    schedules = {s: Schedule(*s) for s in set(specs)}
    Deployment.objects.bulk_create(
        (Deployment(pipeline=p, environment=env, version=v, paused=False,
                    next_due_at=schedules[spec].next_fire(now))
         for p, v, spec in zip(pipelines, versions, specs, strict=True)), batch_size=2000)
    due_ids = sorted(rng.sample(list(Deployment.objects.values_list("id", flat=True)), DUE))
    return due_ids


class Collector:
    """Stands in for scheduler.dispatch.send: keeps (task_run_id, wall time of the would-be send)."""

    def __init__(self) -> None:
        self.sent: dict[int, float] = {}

    def __call__(self, queued) -> None:
        from django.db import transaction

        items = list(queued)
        if items:
            transaction.on_commit(lambda: self.sent.update({q.task_run_id: time.time() for q in items}))


HISTORY = 1_000_000
HISTORY_SQL = """
INSERT INTO pipelines_run (deployment_id, logical_date, data_interval_start, data_interval_end, state, trigger,
                           attempt, created_at, queued_at, started_at, finished_at, error)
SELECT d.id, ts, ts, ts + interval '1 day', 'success', 'schedule', 1, ts, ts, ts, ts, ''
FROM pipelines_deployment d
CROSS JOIN generate_series(timestamptz '2020-01-01', timestamptz '2020-04-09', interval '1 day') AS ts
"""


def breakdown(loop) -> list[tuple[str, float]]:
    """Median ms of each tick step, slowest first."""
    from django.utils import timezone

    steps = {
        "create_due_runs": lambda: loop.create_due_runs(timezone.now()),
        "start_queued_runs": lambda: loop.start_queued_runs(timezone.now()),
        "queue_due_retries": lambda: loop.queue_due_retries(timezone.now()),
        "reap_lost_task_runs": lambda: loop.reap_lost_task_runs(timezone.now()),
        "resend_stuck_task_runs": lambda: loop.resend_stuck_task_runs(timezone.now()),
        "finish_backfills": loop.finish_backfills,
    }
    out = []
    for name, fn in steps.items():
        times = []
        for _ in range(7):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        out.append((name, statistics.median(times) * 1000))
    return sorted(out, key=lambda x: -x[1])


def groups_sql(loop) -> str:
    """The SQL of start_queued_runs' first query, whatever its current shape."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from pipelines.models import Run

    with CaptureQueriesContext(connection) as ctx:
        loop.start_queued_runs(timezone_now())
    return next(q["sql"] for q in ctx.captured_queries if Run._meta.db_table in q["sql"]
                and ("GROUP BY" in q["sql"].upper() or "DISTINCT" in q["sql"].upper()))


def timezone_now():
    from django.utils import timezone

    return timezone.now()


def reset(due_ids, due_at):
    from pipelines.models import Deployment, Run

    Run.objects.all().delete()
    Deployment.objects.filter(pk__in=due_ids).update(next_due_at=due_at)


def count_queries(fn, *args):
    from django.db import connection

    count = 0

    def counter(execute, sql, params, many, context):
        nonlocal count
        count += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(counter):
        started = time.perf_counter()
        result = fn(*args)
        elapsed = time.perf_counter() - started
    return result, elapsed, count


def main() -> int:
    lib.create_database(DB)
    try:
        with lib.time_limit(900):
            return run()
    finally:
        from django.db import connections

        connections.close_all()
        lib.drop_database(DB)


def run() -> int:
    lib.django_on(DB)
    from django.db import connection
    from django.utils import timezone

    from pipelines.models import TaskRun
    from scheduler import dispatch, loop

    collector = Collector()
    dispatch.send = collector  # loop.py calls dispatch.send(...) through the module
    results: list[tuple[str, str]] = []

    started = time.perf_counter()
    now = timezone.now()
    due_ids = populate(now)
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    print(f"setup: {DEPLOYMENTS} deployments bulk-created in {time.perf_counter() - started:.1f} s")

    # 1. nothing due, no runs at all
    idle = []
    for _ in range(IDLE_TICKS):
        _, elapsed, queries = count_queries(loop.tick, timezone.now())
        idle.append(elapsed)
    results.append(("tick, nothing due, no runs in flight (median of 20)",
                     f"{statistics.median(idle) * 1000:.1f} ms ({queries} queries)"))

    # 2. create_due_runs alone, 1,000 due
    due_at = timezone.now()
    reset(due_ids, due_at)
    created, elapsed, queries = count_queries(loop.create_due_runs, timezone.now())
    assert created == DUE, created
    results.append((f"create_due_runs, {DUE} of {DEPLOYMENTS} due",
                    f"{elapsed:.2f} s ({elapsed / DUE * 1000:.2f} ms/run, {queries} queries = {queries / DUE:.1f}/run)"))

    # 3. a full tick, 1,000 due: create + start + queue first tasks; lag due → first task sent
    collector.sent.clear()
    due_at = timezone.now()
    reset(due_ids, due_at)
    report, elapsed, queries = count_queries(loop.tick, timezone.now())
    assert report.runs_created == DUE and report.runs_started == DUE, report
    results.append((f"full tick, {DUE} due (create {report.runs_created}, start {report.runs_started})",
                    f"{elapsed:.2f} s ({queries} queries = {queries / DUE:.1f}/run)"))
    first = TaskRun.objects.filter(run__deployment_id__in=due_ids, position=0)
    assert first.count() == DUE and len(collector.sent) == DUE
    lags = [collector.sent[t] - due_at.timestamp() for t in first.values_list("id", flat=True)]
    recorded = [(q - due_at).total_seconds() for q in first.values_list("queued_at", flat=True)]
    results.append(("lag due → first task handed to broker, p50 / p95 / max",
                    f"{lib.percentile(lags, 50):.2f} / {lib.percentile(lags, 95):.2f} / {max(lags):.2f} s"))
    results.append(("(TaskRun.queued_at − due as recorded, p95)",
                    f"{lib.percentile(recorded, 95) * 1000:.0f} ms (stamped with the tick's start)"))

    # 4. nothing due, 1,000 runs in flight (running, first task queued)
    steady = []
    for _ in range(IDLE_TICKS):
        _, elapsed, queries = count_queries(loop.tick, timezone.now())
        steady.append(elapsed)
    results.append((f"tick, nothing due, {DUE} runs running (median of 20)",
                    f"{statistics.median(steady) * 1000:.1f} ms ({queries} queries)"))

    # 5. nothing due, 1,000,000 finished runs of history (100 days × 10,000 deployments)
    started = time.perf_counter()
    with connection.cursor() as cur:
        cur.execute(HISTORY_SQL)
        cur.execute("ANALYZE pipelines_run")
    print(f"history: {HISTORY:,} finished runs inserted in {time.perf_counter() - started:.1f} s")
    steady = []
    for _ in range(IDLE_TICKS):
        _, elapsed, queries = count_queries(loop.tick, timezone.now())
        steady.append(elapsed)
    parts = breakdown(loop)
    results.append((f"tick, nothing due, {DUE} running + {HISTORY:,} finished runs (median of 20)",
                    f"{statistics.median(steady) * 1000:.1f} ms ({queries} queries; slowest step: "
                    f"{parts[0][0]} {parts[0][1]:.1f} ms)"))
    with connection.cursor() as cur:
        cur.execute("EXPLAIN ANALYZE " + groups_sql(loop))
        plan = "\n".join(row[0] for row in cur.fetchall())

    # 6. the same full tick again under cProfile, for the evidence file (not timed)
    reset(due_ids, timezone.now())
    profile = cProfile.Profile()
    profile.enable()
    loop.tick(timezone.now())
    profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(25)
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(15)
    profile_path = lib.ROOT / "var" / "bench" / "scheduler_tick.prof.txt"
    profile_path.parent.mkdir(parents=True, exist_ok=True)
    profile_path.write_text(out.getvalue() + "\n\nstart_queued_runs' group query with history:\n" + plan + "\n")

    print(f"\nScheduler tick on PostgreSQL, {DEPLOYMENTS} deployments ({lib.stamp()})")
    width = max(len(k) for k, _ in results)
    for key, value in results:
        print(f"  {key:<{width}}  {value}")
    print("  broker send excluded (dispatch.send collected); production adds 0–1 s of tick phase to the lag")
    print(f"  cProfile of the full tick: {profile_path.relative_to(lib.ROOT)}")
    print(f"Reproduce: {COMMAND}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
