"""Fault tests (issue #3 item 8): real scheduler and Celery worker processes on PostgreSQL and
Redis, killed (SIGKILL), frozen (SIGSTOP) and restarted while they work. Each test checks the
invariants of DESIGN.md §5:

1. never two runs for one (deployment, logical date);
2. no run lost: every due run ends success, or failed with a visible reason;
3. a partition's rows equal one clean run's (the source file's rows, once).

Run with -s to see one summary line per test. Leases are short here (tests/faults/processes.py)."""

from __future__ import annotations

import os
import random
import re
import signal
import time
from datetime import date, timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from pipelines.models import Deployment, Run, TaskRun
from pipelines.services import backfill_create
from pipelines.services.runs import deployment_schedule
from scheduler.loop import MAX_CATCHUP_PER_TICK
from tests import factories
from tests.faults.processes import (
    assert_partitions_equal_files,
    duplicate_runs,
    fault_template,
    fault_tests_skip_reason,
    lost_runs,
)
from tests.worker_process import child_pids, kill_group, wait_until

_SKIP = fault_tests_skip_reason()
pytestmark = [
    pytest.mark.faults,
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(_SKIP is not None, reason=_SKIP or ""),
    pytest.mark.timeout(120),
]


def summary(test: str, **figures) -> None:
    print(f"\n[faults] {test}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in figures.items()))


def worker_pid(task_run: TaskRun) -> int:
    """The pid a task run was claimed by (TaskRun.worker is host:pid)."""
    return int(task_run.worker.rsplit(":", 1)[1])


def running_on(process, *, min_seconds: float = 0.3) -> TaskRun | None:
    """A task run that a pool process of this worker has been executing for a moment."""
    pool = set(child_pids(process.pid)) | {process.pid}
    since = timezone.now() - timedelta(seconds=min_seconds)
    for task_run in TaskRun.objects.filter(state=TaskRun.State.RUNNING, started_at__lte=since):
        if worker_pid(task_run) in pool:
            return task_run
    return None


def reaped_tries() -> int:
    """Tries that did not finish on their own: every try beyond the first of each task run
    (these tests inject no other failure)."""
    return sum(max(t - 1, 0) for t in TaskRun.objects.values_list("try_number", flat=True))


# --- 1. SIGKILL workers mid-task during a backfill ------------------------------------------------

def test_workers_killed_mid_task_during_a_backfill_lose_no_run_and_double_no_row(
    author, landing, warehouse, processes
):
    now = timezone.now()
    days = [(now - timedelta(days=d)).date().isoformat() for d in range(1, 11)]
    expected = {ds: factories.write_sales_csv(landing, ds, rows=200 + i) for i, ds in enumerate(days)}
    template = fault_template("slow-ingestion", retries=6, inject_delay_seconds=1)
    pipeline = factories.make_ingestion_pipeline(owner=author, now=now, schedule="0 0 * * *", template=template)
    deployment = pipeline.deployments.get()
    Deployment.objects.filter(pk=deployment.pk).update(paused=True)  # only the backfill runs

    processes.scheduler("a")
    workers = [processes.worker("w1", concurrency=3)]
    backfill = backfill_create(actor=author, deployment=deployment, start=date.fromisoformat(min(days)),
                               end=date.fromisoformat(max(days)), now=now,
                               max_active_runs=3)
    started = time.monotonic()
    kills = []
    # Alternate: kill the pool process executing a task (the worker survives and forks a new
    # one), then the whole worker (a new one is started). Each time a task is mid-execution.
    for kind in ("pool process", "whole worker", "pool process", "whole worker"):
        worker = workers[-1]
        victim = wait_until(lambda w=worker: running_on(w), timeout=30, message=f"a task running on {kind}")
        if kind == "pool process":
            pid = worker_pid(victim)
            assert pid in child_pids(worker.pid), (
                f"TaskRun.worker names pid {pid}, which is not a pool process of worker {worker.pid} "
                f"(its pool: {child_pids(worker.pid)})"
            )
            os.kill(pid, signal.SIGKILL)
        else:
            kill_group(worker)
            worker.wait()
            workers.append(processes.worker(f"w{len(workers) + 1}", concurrency=3))
        kills.append(f"{kind} running {victim.task_id} of run {victim.run_id}")

    def finished():
        runs = list(backfill.runs.all())
        return len(runs) == 10 and all(run.is_finished for run in runs)

    wait_until(finished, timeout=90, message=f"the backfill to finish\n{processes.all_logs()}")

    runs = list(Run.objects.filter(deployment=deployment))
    assert duplicate_runs() == 0
    assert lost_runs(runs) == []
    assert {run.state for run in runs} == {Run.State.SUCCESS}, [(str(r), r.error) for r in runs]
    assert sorted(run.logical_date.date().isoformat() for run in runs) == sorted(days)
    assert TaskRun.objects.filter(run__deployment=deployment, state=TaskRun.State.SUCCESS).count() == 40
    rows = assert_partitions_equal_files(warehouse, "daily_sales_load", expected)
    reaped = reaped_tries()
    assert reaped >= len(kills)  # every kill cost at least the try it hit
    summary("worker SIGKILL mid-task", kills_injected=len(kills), tries_reaped=reaped, runs=len(runs),
            lost=0, duplicates=0, rows=rows, seconds=round(time.monotonic() - started))




# --- 2. two schedulers on the same pipelines -----------------------------------------------------

def runs_created_by(log: str) -> int:
    return sum(int(n) for n in re.findall(r"runs_created=(\d+)", log))


def test_two_schedulers_on_the_same_pipelines_never_create_or_run_anything_twice(
    author, landing, warehouse, processes
):
    now = timezone.now()
    files = {ds: factories.write_sales_csv(landing, ds, rows=20)
             for ds in {(now + timedelta(days=d)).date().isoformat() for d in (-1, 0, 1)}}
    template = fault_template("minutely-catchup", catchup=True, max_active_runs=3, retries=2)
    deployments = []
    for i in range(20):
        pipeline = factories.make_ingestion_pipeline(owner=author, now=now, slug=f"minutely_{i:02d}",
                                                     schedule="* * * * *", template=template)
        deployment = pipeline.deployments.get()
        # Three missed minutes to catch up on at the first tick, then one new interval a minute.
        Deployment.objects.filter(pk=deployment.pk).update(next_due_at=deployment.next_due_at - timedelta(minutes=3))
        deployment.refresh_from_db()
        deployments.append(deployment)
    first_due = {d.pk: d.next_due_at for d in deployments}

    started = time.monotonic()
    schedulers = [processes.scheduler("a"), processes.scheduler("b")]
    processes.worker("w1", concurrency=4)
    time.sleep(20)  # both schedulers tick over the same deployments, 5 times a second each

    # Stop scheduling new intervals (the schedulers keep running: starting runs, retrying,
    # reaping). The row lock waits for a scheduler that is creating runs for the deployment.
    frozen_at = timezone.now()
    last_due = {}
    for deployment in deployments:
        with transaction.atomic():
            last_due[deployment.pk] = Deployment.objects.select_for_update().get(pk=deployment.pk).next_due_at
            Deployment.objects.filter(pk=deployment.pk).update(next_due_at=frozen_at + timedelta(days=365))

    def all_finished():
        return not Run.objects.exclude(state__in=Run.FINISHED_STATES).exists()

    wait_until(all_finished, timeout=60, message=f"every run to finish\n{processes.all_logs()}")
    for name, scheduler in zip("ab", schedulers, strict=True):
        assert scheduler.poll() is None, f"scheduler {name} died:\n{processes.log(scheduler)[-3000:]}"
        assert "Traceback" not in processes.log(scheduler), processes.log(scheduler)[-3000:]

    assert duplicate_runs() == 0
    runs = list(Run.objects.all())
    assert lost_runs(runs) == []
    assert {run.state for run in runs} == {Run.State.SUCCESS}
    rows = 0
    for deployment in deployments:
        schedule = deployment_schedule(deployment)
        assert last_due[deployment.pk] > frozen_at - timedelta(seconds=5), "a scheduler fell behind"
        # Every interval from the first missed one to the last due one, once, in order.
        fires = list(schedule.fires_between(first_due[deployment.pk], last_due[deployment.pk] - timedelta(microseconds=1)))
        logical_dates = sorted(Run.objects.filter(deployment=deployment).values_list("logical_date", flat=True))
        assert logical_dates == [schedule.previous_fire(fire) for fire in fires], deployment
        expected = {ld.strftime("%Y-%m-%dT%H:%M"): files[ld.date().isoformat()] for ld in logical_dates}
        rows += assert_partitions_equal_files(warehouse, deployment.pipeline.slug, expected)

    created = {name: runs_created_by(processes.log(s)) for name, s in zip("ab", schedulers, strict=True)}
    assert sum(created.values()) == len(runs)
    summary("two schedulers", pipelines=len(deployments), runs=len(runs),
            runs_created_by_each=f"{created['a']}/{created['b']}", lost=0, duplicates=0, scheduler_crashes=0,
            rows=rows, seconds=round(time.monotonic() - started))


# --- 3. a scheduler killed in the middle of catching up ----------------------------------------------

# A scheduler process in a transaction that has locked deployments and inserted runs for a
# while: create_due_runs in the middle of a catchup.
CREATING_RUNS = """
SELECT EXISTS (
    SELECT 1 FROM pg_stat_activity a
    WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
      AND a.xact_start < clock_timestamp() - interval '50 milliseconds'
      AND EXISTS (SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                  WHERE l.pid = a.pid AND c.relname = 'pipelines_run' AND l.mode = 'RowExclusiveLock')
      AND EXISTS (SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                  WHERE l.pid = a.pid AND c.relname = 'pipelines_deployment' AND l.mode = 'RowShareLock')
)"""


def creating_runs() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(CREATING_RUNS)
        return cursor.fetchone()[0]


MISSED = 1600  # > 3 × MAX_CATCHUP_PER_TICK


def test_a_scheduler_killed_while_catching_up_creates_each_missed_interval_exactly_once(
    author, landing, warehouse, processes
):
    now = timezone.now()
    # Creation only (max_active_runs 0: never started), MISSED five-minute intervals each: more
    # than one tick creates (MAX_CATCHUP_PER_TICK per deployment per tick), so a scheduler's
    # life has several creating transactions to be killed in.
    catchup_all = fault_template("five-minutely-catchup", catchup=True, max_active_runs=0)
    catchup_off = fault_template("five-minutely-latest", catchup=False, max_active_runs=0)
    # Executed by a worker while schedulers die: four missed days.
    daily = fault_template("daily-catchup", catchup=True, max_active_runs=2, retries=2)
    made = [factories.make_ingestion_pipeline(owner=author, now=now, slug=f"five_min_{i}", schedule="*/5 * * * *",
                                              template=catchup_all) for i in range(4)]
    latest_only = factories.make_ingestion_pipeline(owner=author, now=now, slug="five_min_latest",
                                                    schedule="*/5 * * * *", template=catchup_off)
    small = factories.make_ingestion_pipeline(owner=author, now=now, slug="daily_catchup", schedule="0 0 * * *",
                                              template=daily)
    for pipeline in [*made, latest_only]:
        Deployment.objects.filter(pipeline=pipeline).update(
            next_due_at=pipeline.deployments.get().next_due_at - timedelta(minutes=5 * MISSED))
    Deployment.objects.filter(pipeline=small).update(
        next_due_at=small.deployments.get().next_due_at - timedelta(days=3))
    big = [p.deployments.get() for p in made]
    first_due = {d.pk: d.next_due_at for d in big}
    small_deployment = small.deployments.get()
    files = {}
    for fire in deployment_schedule(small_deployment).fires_between(small_deployment.next_due_at, now):
        ds = deployment_schedule(small_deployment).previous_fire(fire).date().isoformat()
        files[ds] = factories.write_sales_csv(landing, ds, rows=100)
    assert len(files) == 4

    started = time.monotonic()
    processes.worker("w1", concurrency=2)
    rng = random.Random()
    committed_at_kill = []

    def committed() -> int:
        return Deployment.objects.filter(pk__in=first_due).exclude(next_due_at__in=first_due.values()).count()

    def committed_runs() -> int:
        return Run.objects.filter(deployment__in=big).count()

    # Kill k lands while the scheduler is creating catchup runs, once at least k ticks' worth
    # of them have committed: the first kill mid-way through the first transaction, later ones
    # after some have committed. (Deployments are created in batches, several per transaction.)
    per_tick = len(big) * MAX_CATCHUP_PER_TICK
    for attempt in range(3):
        scheduler = processes.scheduler(f"killed-{attempt}")
        wait_until(lambda a=attempt: committed_runs() >= a * per_tick and creating_runs(), timeout=30,
                   interval=0.02, message=f"the scheduler to be creating catchup runs\n{processes.all_logs()}")
        time.sleep(rng.uniform(0, 0.3))
        kill_group(scheduler)
        scheduler.wait()
        # All or nothing per deployment: its runs and its next_due_at commit together (in its
        # batch's transaction), and what is committed is whole ticks' worth of intervals.
        assert committed_runs() % per_tick == 0 or committed_runs() >= len(big) * MISSED, committed_runs()
        done = 0
        for deployment in big:
            count = Run.objects.filter(deployment=deployment).count()
            moved = Deployment.objects.get(pk=deployment.pk).next_due_at != first_due[deployment.pk]
            assert (count > 0) == moved, f"{deployment}: {count} runs, next_due_at moved: {moved}"
            done += moved
        committed_at_kill.append(done)

    final = processes.scheduler("final")

    def caught_up():
        return (all(d.next_due_at > now for d in Deployment.objects.filter(pk__in=[d.pk for d in big]))
                and Run.objects.filter(deployment=small_deployment, state=Run.State.SUCCESS).count() == 4)

    wait_until(caught_up, timeout=60, message=f"the restarted scheduler to catch up\n{processes.all_logs()}")
    checked_at = timezone.now()
    assert final.poll() is None and "Traceback" not in processes.log(final), processes.log(final)[-3000:]

    assert duplicate_runs() == 0
    created = 0
    for deployment in Deployment.objects.filter(pk__in=[d.pk for d in big]):
        schedule = deployment_schedule(deployment)
        assert deployment.next_due_at > checked_at - timedelta(seconds=5)
        fires = list(schedule.fires_between(first_due[deployment.pk], deployment.next_due_at - timedelta(microseconds=1)))
        assert len(fires) >= MISSED + 1
        logical_dates = sorted(Run.objects.filter(deployment=deployment).values_list("logical_date", flat=True))
        assert logical_dates == [schedule.previous_fire(fire) for fire in fires], deployment
        created += len(logical_dates)
    # Catchup off: only the latest interval (two if a five-minute boundary passed meanwhile).
    latest = latest_only.deployments.get()
    schedule = deployment_schedule(latest)
    latest_dates = list(Run.objects.filter(deployment=latest).values_list("logical_date", flat=True))
    allowed = {schedule.previous_fire(schedule.latest_fire(t)) for t in (now, checked_at)}
    assert 1 <= len(latest_dates) <= 2 and set(latest_dates) <= allowed, (latest_dates, allowed)
    # The runs that were executed meanwhile: none lost, each partition loaded once.
    small_runs = list(Run.objects.filter(deployment=small_deployment))
    assert lost_runs(small_runs) == [] and len(small_runs) == 4
    rows = assert_partitions_equal_files(warehouse, "daily_catchup", files)
    summary("scheduler SIGKILL mid-catchup", kills_injected=len(committed_at_kill),
            deployments_committed_at_each_kill=committed_at_kill, catchup_runs=created,
            latest_only_runs=len(latest_dates), executed_runs=len(small_runs), lost=0, duplicates=0, rows=rows,
            seconds=round(time.monotonic() - started))


# --- 4. a worker frozen past its lease ---------------------------------------------------------

def test_a_worker_frozen_past_its_lease_is_reaped_retried_elsewhere_and_its_late_result_refused(
    author, landing, warehouse, processes
):
    now = timezone.now()
    ds = (now - timedelta(days=1)).date().isoformat()
    rows = factories.write_sales_csv(landing, ds, rows=300)
    template = fault_template("slow-extract", retries=2, inject_delay_seconds={"extract": 4})
    pipeline = factories.make_ingestion_pipeline(owner=author, now=now, schedule="0 0 * * *", template=template)

    started = time.monotonic()
    frozen = processes.worker("frozen", concurrency=1)
    processes.scheduler("a")
    extract = TaskRun.objects.filter(run__deployment__pipeline=pipeline, task_id="extract")
    first = wait_until(lambda: running_on(frozen, min_seconds=0.5), timeout=30, message="try 1 of extract")
    assert first.task_id == "extract" and first.try_number == 1
    kill_group(frozen, signal.SIGSTOP)  # no step, no heartbeat: the lease (3 s) runs out
    stopped_at = time.monotonic()

    other = processes.worker("other", concurrency=1)
    second = wait_until(lambda: running_on(other, min_seconds=0), timeout=30,
                        message=f"extract retried on the other worker\n{processes.all_logs()}")
    assert (second.task_id, second.try_number) == ("extract", 2)
    stopped_for = time.monotonic() - stopped_at
    kill_group(frozen, signal.SIGCONT)  # wakes while try 2 runs: its step ends, its success is refused
    wait_until(lambda: "result refused" in processes.log(frozen), timeout=20,
               message=f"the frozen worker's late result to be refused\n{processes.log(frozen)[-3000:]}")

    run = wait_until(lambda: Run.objects.filter(deployment__pipeline=pipeline, state__in=Run.FINISHED_STATES).first(),
                     timeout=40, message=f"the run to finish\n{processes.all_logs()}")
    assert run.state == Run.State.SUCCESS, run.error
    final = extract.get()
    assert final.state == TaskRun.State.SUCCESS and final.try_number == 2
    assert worker_pid(final) in child_pids(other.pid)  # try 2's record, not the late try 1's
    assert "try 2 of task 'extract'" in final.log and final.error == ""
    assert f"task run {final.pk} try 1: result refused" in processes.log(frozen)
    assert set(TaskRun.objects.filter(run=run).values_list("state", flat=True)) == {TaskRun.State.SUCCESS}
    assert duplicate_runs() == 0 and lost_runs([run]) == []
    loaded = assert_partitions_equal_files(warehouse, "daily_sales_load", {ds: rows})
    summary("worker SIGSTOP past its lease", stops_injected=1, stopped_seconds=round(stopped_for, 1),
            late_results_refused=processes.log(frozen).count("result refused"), runs=1, lost=0, duplicates=0,
            rows=loaded, seconds=round(time.monotonic() - started))


# --- 5. a task that crashes its worker process every time ------------------------------------------

def test_a_task_that_crashes_its_worker_every_time_fails_after_its_retries_with_the_reason(
    author, landing, warehouse, processes
):
    now = timezone.now()
    factories.write_sales_csv(landing, (now - timedelta(days=1)).date().isoformat(), rows=10)
    template = fault_template("crashing", retries=2, inject_crash=True)
    pipeline = factories.make_ingestion_pipeline(owner=author, now=now, schedule="0 0 * * *", template=template)

    started = time.monotonic()
    worker = processes.worker("w1", concurrency=1)
    processes.scheduler("a")
    run = wait_until(lambda: Run.objects.filter(deployment__pipeline=pipeline, state__in=Run.FINISHED_STATES).first(),
                     timeout=45, message=f"the run to fail\n{processes.all_logs()}")

    crashes = processes.log(worker).count("injected crash of this worker process")
    extract = TaskRun.objects.get(run=run, task_id="extract")
    assert run.state == Run.State.FAILED
    assert extract.state == TaskRun.State.FAILED
    assert extract.try_number == extract.max_tries == 3 == crashes  # one crash per try, no more
    # The reason says what happened and that it was the last try.
    assert "stopped heart-beating" in extract.error and "try 3 of 3 was reaped" in extract.error, extract.error
    assert "stopped heart-beating" in run.error
    assert set(TaskRun.objects.filter(run=run).exclude(pk=extract.pk).values_list("state", flat=True)) == {
        TaskRun.State.UPSTREAM_FAILED
    }

    # Nothing loops: longer than a lease, a retry delay and a requeue later, nothing moved.
    time.sleep(6)
    extract.refresh_from_db()
    assert (extract.state, extract.try_number) == (TaskRun.State.FAILED, 3)
    assert processes.log(worker).count("injected crash of this worker process") == crashes
    assert not TaskRun.objects.exclude(state__in=TaskRun.FINISHED_STATES).exists()
    assert worker.poll() is None  # the worker itself survived: only its pool processes died
    assert duplicate_runs() == 0 and lost_runs([run]) == []
    assert not factories.warehouse_rows(warehouse, "sqlite_master", "WHERE name = 'daily_sales_load'")
    summary("task crashing its worker", crashes_injected=crashes, tries=extract.try_number, runs=1,
            run_state=run.state, lost=0, duplicates=0, reason=repr(extract.error),
            seconds=round(time.monotonic() - started))
