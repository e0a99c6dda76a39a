"""Ingestion benchmark (issue #4 item 9): 1,000,000 order rows in 10 daily CSV partitions loaded
into PostgreSQL by raw COPY (the ceiling), a hand-written staging + delete/insert, Railyard's
ingestion steps (extract → validate → load → publish) and dlt (merge / delete-insert, Parquet
and CSV), side by side in one run; then Railyard re-loads one partition unchanged and one
partition with 30 % of rows updated, 5 % deleted and 5 % new. Every load runs in its own
subprocess (its wall time is measured from outside, its peak RSS read with wait4); every table
is checked against the others by row count and an md5 of all columns (normalised text) ordered
by (dt, order_id).

    .venv/bin/python bench/ingest_bench.py            # the whole comparison (about 5-10 minutes)
    .venv/bin/python bench/ingest_bench.py --no-dlt   # without dlt
    .venv/bin/python bench/ingest_bench.py --profile  # also cProfile Railyard's full load (and time
                                                      # its SQL statements): var/bench/ingest/railyard_profile_*.txt

Data (seeded, deterministic) is generated once and cached under var/bench/ingest/ (git-ignored):
landing/<ds>/orders.csv, landing_changed/<ds>/orders.csv, parquet/<ds>/orders.parquet. The
database railyard_ingest_bench and dlt's working folder are removed at the end, whatever happens.
dlt runs in its own virtualenv (bench/.venv-dlt), created on first use:

    python3.11 -m venv bench/.venv-dlt && bench/.venv-dlt/bin/pip install "dlt[postgres]" pyarrow
"""

from __future__ import annotations

import argparse
import atexit
import csv
import hashlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "var" / "bench" / "ingest"
WORK = DATA / "work"  # per-run scratch (child output, dlt pipelines, profiles): removed at the end
DLT_PYTHON = ROOT / "bench" / ".venv-dlt" / "bin" / "python"
DB = os.environ.get("BENCH_INGEST_DB", "railyard_ingest_bench")
PG_HOST = os.environ.get("BENCH_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BENCH_PG_PORT", "5432"))
PG_USER = os.environ.get("BENCH_PG_USER", "postgres")

SEED = 20240301
DAYS = [(date(2024, 3, 1) + timedelta(days=i)).isoformat() for i in range(10)]
ROWS_PER_DAY = 100_000
CHANGED_DS = "2024-03-06"  # the partition re-loaded (unchanged, then changed)
DATA_VERSION = 1
COLUMNS = ["order_id", "dt", "customer_id", "sku", "quantity", "amount", "updated_at"]
TYPED_DDL = (
    "order_id bigint NOT NULL, dt date NOT NULL, customer_id bigint, sku text, quantity integer,"
    " amount numeric(12,2), updated_at timestamp"
)

# Goals from the issue
GOAL_VS_COPY = 1.5
GOAL_VS_DLT_PARQUET = 4.0
GOAL_VS_DLT_CSV = 20.0
GOAL_RSS_MB = 300


def loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S} load {loadavg()}] {message}", flush=True)


def dsn(dbname: str = DB) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}"


def landing_csv(ds: str, changed: bool = False) -> Path:
    return DATA / ("landing_changed" if changed else "landing") / ds / "orders.csv"


def parquet_file(ds: str, changed: bool = False) -> Path:
    return DATA / ("parquet_changed" if changed else "parquet") / ds / "orders.parquet"


# ---------------------------------------------------------------------------------------
# Data: generated once (seeded), cached under var/bench/ingest with a manifest of sha256


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _all_files() -> list[Path]:
    files = [landing_csv(ds) for ds in DAYS] + [parquet_file(ds) for ds in DAYS]
    return files + [landing_csv(CHANGED_DS, True), parquet_file(CHANGED_DS, True)]


def _manifest_key() -> dict:
    return {"version": DATA_VERSION, "seed": SEED, "days": DAYS, "rows_per_day": ROWS_PER_DAY,
            "changed": CHANGED_DS}


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    tmp.replace(path)


def _write_parquet(csv_path: Path, path: Path) -> None:
    """The same rows, typed: what a well-behaved upstream would hand dlt (its best case)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    types = {"order_id": pa.int64(), "dt": pa.date32(), "customer_id": pa.int64(), "sku": pa.string(),
             "quantity": pa.int32(), "amount": pa.decimal128(12, 2), "updated_at": pa.timestamp("us")}
    table = pacsv.read_csv(csv_path, convert_options=pacsv.ConvertOptions(column_types=types))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)


def _day_rows(rng: random.Random, ds: str, first_id: int) -> list[list[str]]:
    rows = []
    seconds = sorted(rng.randrange(86400) for _ in range(ROWS_PER_DAY))
    for i in range(ROWS_PER_DAY):
        s = seconds[i]
        cents = rng.randrange(199, 250_000)
        rows.append([
            str(first_id + i), ds, str(rng.randrange(1, 250_001)), f"SKU-{rng.randrange(1, 5001):05d}",
            str(rng.randrange(1, 21)), f"{cents // 100}.{cents % 100:02d}",
            f"{ds} {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}",
        ])
    return rows


def _changed(rng: random.Random, rows: list[list[str]], next_id: int) -> tuple[list[list[str]], dict]:
    """30 % of the rows updated, 5 % deleted, 5 % new (ids above every existing one)."""
    n = len(rows)
    order = list(range(n))
    rng.shuffle(order)
    updated = set(order[: n * 30 // 100])
    deleted = set(order[n * 30 // 100 : n * 35 // 100])
    out = []
    for i, row in enumerate(rows):
        if i in deleted:
            continue
        if i in updated:
            cents = rng.randrange(199, 250_000)
            s = rng.randrange(86400)
            nxt = (date.fromisoformat(row[1]) + timedelta(days=1)).isoformat()
            row = [row[0], row[1], row[2], row[3], str(rng.randrange(1, 21)), f"{cents // 100}.{cents % 100:02d}",
                   f"{nxt} {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"]
        out.append(row)
    new = _day_rows(rng, rows[0][1], next_id)[: n * 5 // 100]
    out.extend(new)
    return out, {"updated": len(updated), "deleted": len(deleted), "new": len(new), "rows": len(out)}


def ensure_data() -> dict:
    manifest_path = DATA / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("key") == _manifest_key() and all(
            (DATA / rel).exists() and _sha256(DATA / rel) == sha for rel, sha in manifest["files"].items()
        ):
            log("data: cached files verified (sha256)")
            return manifest
    log("data: generating 1,000,000 rows in 10 daily partitions (seeded)")
    t0 = time.perf_counter()
    rng = random.Random(SEED)
    next_id = 1_000_001
    changed_info: dict = {}
    for ds in DAYS:
        rows = _day_rows(rng, ds, next_id)
        next_id += ROWS_PER_DAY
        _write_csv(landing_csv(ds), rows)
        if ds == CHANGED_DS:
            changed_rows = rows
    changed_rows, changed_info = _changed(random.Random(SEED + 1), changed_rows, 9_000_001)
    _write_csv(landing_csv(CHANGED_DS, True), changed_rows)
    for ds in DAYS:
        _write_parquet(landing_csv(ds), parquet_file(ds))
    _write_parquet(landing_csv(CHANGED_DS, True), parquet_file(CHANGED_DS, True))
    manifest = {"key": _manifest_key(), "changed": changed_info,
                "files": {str(p.relative_to(DATA)): _sha256(p) for p in _all_files()}}
    manifest_path.write_text(json.dumps(manifest, indent=1))
    log(f"data: generated in {time.perf_counter() - t0:.1f} s")
    return manifest


# ---------------------------------------------------------------------------------------
# Children: each load runs in its own process (`ingest_bench.py _child KIND ARGS-JSON`)


def child_copy(args: dict) -> dict:
    """Raw COPY of the CSV files, streamed in 1 MiB chunks, one COPY (one transaction) per file."""
    import psycopg

    schema, with_pk = args["schema"], args["with_pk"]
    with psycopg.connect(dsn(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")
        pk = ", PRIMARY KEY (dt, order_id)" if with_pk else ""
        conn.execute(f"CREATE TABLE {schema}.orders ({TYPED_DDL}{pk})")
        t0 = time.perf_counter()
        rows = 0
        for ds in DAYS:
            with conn.cursor() as cur:
                with cur.copy(f"COPY {schema}.orders FROM STDIN (FORMAT csv, HEADER true)") as copy, \
                        open(landing_csv(ds), "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        copy.write(chunk)
                rows += cur.rowcount
        return {"seconds": time.perf_counter() - t0, "rows": rows}


def _staging_load(conn, schema: str, ds: str, path: Path) -> int:
    with conn.transaction():
        conn.execute(f"CREATE TEMP TABLE stg (LIKE {schema}.orders) ON COMMIT DROP")
        with conn.cursor() as cur:
            with cur.copy("COPY stg FROM STDIN (FORMAT csv, HEADER true)") as copy, open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    copy.write(chunk)
        conn.execute(f"DELETE FROM {schema}.orders WHERE dt = %s", [ds])
        return conn.execute(f"INSERT INTO {schema}.orders SELECT * FROM stg WHERE dt = %s", [ds]).rowcount


def child_staging(args: dict) -> dict:
    """Hand-written: per partition COPY into a temp staging table, then delete + insert the partition."""
    import psycopg

    schema = args["schema"]
    with psycopg.connect(dsn(), autocommit=True) as conn:
        if args["phase"] == "full":
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            conn.execute(f"CREATE SCHEMA {schema}")
            conn.execute(f"CREATE TABLE {schema}.orders ({TYPED_DDL}, PRIMARY KEY (dt, order_id))")
            t0 = time.perf_counter()
            rows = sum(_staging_load(conn, schema, ds, landing_csv(ds)) for ds in DAYS)
        else:
            t0 = time.perf_counter()
            rows = _staging_load(conn, schema, CHANGED_DS, landing_csv(CHANGED_DS, True))
        return {"seconds": time.perf_counter() - t0, "rows": rows}


def child_railyard(args: dict) -> dict:
    """Railyard's four steps per partition, through StepContext and the step functions only."""
    sys.path.insert(0, str(ROOT))
    from dataclasses import replace

    from pipelines.steps import ingestion
    from pipelines.steps.base import ConnectionSpec, StepContext

    specs = {
        "landing": ConnectionSpec("landing", "files", {"base_path": str(DATA)}),
        "wh": ConnectionSpec("wh", "postgres", {"host": PG_HOST, "port": PG_PORT, "dbname": DB,
                                                "user": PG_USER, "schema": args["schema"]}),
    }
    if args.get("fresh"):
        import psycopg

        with psycopg.connect(dsn(), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {args['schema']} CASCADE")
    guardrails = dict(args.get("guardrails") or {})
    steps = [("extract", ingestion.extract), ("validate", ingestion.validate), ("load", ingestion.load),
             ("publish", ingestion.publish)]
    timings = dict.fromkeys([name for name, _ in steps], 0.0)
    results = []
    logs: list[str] = []
    profiler = None
    sql_seconds: dict[str, list] = {}
    if args.get("profile"):
        import cProfile
        import re

        from pipelines.connectors.sql import PostgresDatabase

        def timed(method):
            def wrapper(self, sql, *rest, **kw):
                s0 = time.perf_counter()
                try:
                    return method(self, sql, *rest, **kw)
                finally:
                    shape = re.sub(r"\d+", "N", " ".join(str(sql).split()))[:110]
                    entry = sql_seconds.setdefault(f"{method.__name__}: {shape}", [0, 0.0])
                    entry[0] += 1
                    entry[1] += time.perf_counter() - s0
            return wrapper

        for name in ("execute", "query", "bulk_insert"):  # wrapped in this process only, to time SQL
            setattr(PostgresDatabase, name, timed(getattr(PostgresDatabase, name)))

        profiler = cProfile.Profile()
        profiler.enable()
    t0 = time.perf_counter()
    for run_id, ds, source in args["runs"]:
        start = datetime.fromisoformat(ds).replace(tzinfo=UTC)
        ctx = StepContext(
            pipeline="orders", environment="bench", run_id=run_id, task_id="extract", try_number=1,
            logical_date=start, data_interval_start=start, data_interval_end=start + timedelta(days=1),
            ds=ds, inputs={
                "source_connection": "landing", "source": source, "primary_key": ["order_id"],
                "partition_column": "dt", "warehouse_connection": "wh", "target_table": "orders",
            },
            guardrails=guardrails, connection=specs.__getitem__, log=logs.append,
        )
        for name, step in steps:
            s0 = time.perf_counter()
            result = step(replace(ctx, task_id=name))
            timings[name] += time.perf_counter() - s0
            if name == "load":
                results.append({"ds": ds, "rows_written": result.rows_written,
                                "metrics": {k: v for k, v in result.metrics.items() if not isinstance(v, dict | list)}})
    seconds = time.perf_counter() - t0
    if profiler is not None:
        import pstats

        profiler.disable()
        WORK.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(WORK / "railyard.prof")
        with open(DATA / f"railyard_profile_{args['schema']}.txt", "w") as fh:
            stats = pstats.Stats(profiler, stream=fh).strip_dirs()
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(30)
            fh.write("\nSQL statements by total seconds (calls, seconds, statement shape):\n")
            for shape, (calls, secs) in sorted(sql_seconds.items(), key=lambda kv: -kv[1][1])[:25]:
                fh.write(f"{calls:6d} {secs:8.3f}  {shape}\n")
    return {"seconds": seconds, "steps": {k: round(v, 3) for k, v in timings.items()}, "loads": results,
            "log_tail": logs[-8:]}


CHILDREN = {"copy": child_copy, "staging": child_staging, "railyard": child_railyard}


# ---------------------------------------------------------------------------------------
# Parent: subprocesses timed from outside, peak RSS through wait4, always cleaned up

_running: dict[int, subprocess.Popen] = {}


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the child and anything it started
    except ProcessLookupError:
        pass


def run(cmd: list[str], timeout: float, label: str, watch=None) -> dict:
    """Run cmd in its own session; wall seconds, peak RSS (MB, wait4), the JSON its last stdout line holds."""
    WORK.mkdir(parents=True, exist_ok=True)
    out = tempfile.NamedTemporaryFile("w+", dir=WORK, prefix="out-", delete=False)
    err = tempfile.NamedTemporaryFile("w+", dir=WORK, prefix="err-", delete=False)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RUNTIME__DLTHUB_TELEMETRY": "false",
           "DLT_DATA_DIR": str(WORK / "dlt_home")}
    before = loadavg()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT, env=env, start_new_session=True)
    _running[proc.pid] = proc
    status = rusage = None
    timed_out = False
    try:
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if watch is not None:
                watch()
            if time.perf_counter() - t0 > timeout:
                timed_out = True
                _kill(proc)
                _, status, rusage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
    finally:
        _running.pop(proc.pid, None)
        proc.returncode = os.waitstatus_to_exitcode(status) if status is not None else -9
    wall = time.perf_counter() - t0
    out.seek(0)
    err.seek(0)
    stdout, stderr = out.read(), err.read()
    out.close()
    err.close()
    result: dict = {"label": label, "wall": wall, "rss_mb": rusage.ru_maxrss / 1024 if rusage else None,
                    "load_before": before, "load_after": loadavg(), "ok": False, "timed_out": timed_out}
    if proc.returncode == 0:
        try:
            result.update(json.loads(stdout.strip().splitlines()[-1]))
            result["ok"] = True
        except (ValueError, IndexError):
            result["error"] = f"no JSON on stdout: {stdout[-500:]!r}"
    else:
        result["error"] = f"timed out after {timeout:.0f} s" if timed_out else f"exit {proc.returncode}"
        result["stderr"] = stderr[-3000:]
    if result.get("maxrss_children_kb"):  # dlt's own children, if it starts any
        result["rss_mb"] = max(result["rss_mb"] or 0, result["maxrss_children_kb"] / 1024)
    log(f"{label}: wall {wall:.2f} s, peak RSS {result['rss_mb'] or 0:.0f} MB"
        + ("" if result["ok"] else f" -- FAILED: {result['error']}\n{result.get('stderr', '')}"))
    return result


def run_child(kind: str, args: dict, label: str, timeout: float = 900) -> dict:
    return run([sys.executable, str(Path(__file__).resolve()), "_child", kind, json.dumps(args)], timeout, label)


def admin():
    import psycopg

    return psycopg.connect(dsn("postgres"), autocommit=True)


def bench_conn():
    import psycopg

    conn = psycopg.connect(dsn(), autocommit=True)
    conn.execute("SET TimeZone = 'UTC'")
    return conn


def drop_everything() -> None:
    for proc in list(_running.values()):
        _kill(proc)
    try:
        with admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the real error
        print(f"cleanup: could not drop database {DB}: {exc}", file=sys.stderr)
    shutil.rmtree(WORK, ignore_errors=True)


def checkpoint() -> None:
    with admin() as conn:
        conn.execute("CHECKPOINT")


# Every column cast to the same logical type, then to text, so TEXT, typed (numeric, double,
# timestamptz...) and dlt's tables compare alike: integers as integers, amount at 2 decimals,
# dates ISO, timestamps without zone in UTC (the session zone is UTC).
NORMALISED = (
    "concat_ws('|', coalesce(order_id::bigint::text, '~'), coalesce(dt::date::text, '~'),"
    " coalesce(customer_id::bigint::text, '~'), coalesce(sku::text, '~'), coalesce(quantity::bigint::text, '~'),"
    " coalesce(amount::numeric(12,2)::text, '~'), coalesce(updated_at::timestamp::text, '~'))"
)


def checksum(conn, schema: str, table: str = "orders") -> tuple[int, str]:
    row = conn.execute(
        f"SELECT count(*), md5(string_agg({NORMALISED}, E'\\n' ORDER BY dt::date, order_id::bigint))"
        f" FROM {schema}.{table}"
    ).fetchone()
    return int(row[0]), row[1]


def column_types(conn, schema: str) -> str:
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s"
        " AND table_name = 'orders' ORDER BY ordinal_position", [schema]).fetchall()
    return ", ".join(f"{c} {t}" for c, t in rows if c in COLUMNS)


def table_stats(conn, schema: str) -> dict:
    """Cumulative tuple counters of schema.orders, once they stop moving (a child's backend flushes
    its counters when it exits, a moment after the child does)."""
    sql = ("SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, n_live_tup, n_dead_tup"
           " FROM pg_stat_user_tables WHERE schemaname = %s AND relname = 'orders'")
    last = None
    for _ in range(40):
        conn.execute("SELECT pg_stat_force_next_flush()")  # PG 15+: this session's own pending counters
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(sql, [schema]).fetchone()
        if row == last:
            break
        last = row
        time.sleep(0.25)
    keys = ["n_tup_ins", "n_tup_upd", "n_tup_hot_upd", "n_tup_del", "n_live_tup", "n_dead_tup"]
    return dict(zip(keys, last or [None] * 6, strict=True))


def snapshot_versions(conn, schema: str) -> None:
    conn.execute("DROP TABLE IF EXISTS bench_meta.versions")
    conn.execute("CREATE SCHEMA IF NOT EXISTS bench_meta")
    conn.execute(
        f"CREATE TABLE bench_meta.versions AS SELECT order_id::bigint AS k, xmin::text AS x, ctid::text AS c"
        f" FROM {schema}.orders WHERE dt::date = %s", [CHANGED_DS])
    conn.execute("CREATE UNIQUE INDEX ON bench_meta.versions (k)")


def rewritten_rows(conn, schema: str) -> dict:
    """Rows of the partition that are new tuple versions since the snapshot (other xmin or ctid)."""
    row = conn.execute(
        f"SELECT count(*) FILTER (WHERE v.k IS NULL OR v.x <> o.xmin::text OR v.c <> o.ctid::text),"
        f" count(*) FROM {schema}.orders o LEFT JOIN bench_meta.versions v ON v.k = o.order_id::bigint"
        f" WHERE o.dt::date = %s", [CHANGED_DS]).fetchone()
    return {"new_tuple_versions": row[0], "partition_rows": row[1]}


def prepare_reload(conn, schema: str) -> dict:
    conn.execute(f"VACUUM (ANALYZE) {schema}.orders")
    conn.execute(f"ALTER TABLE {schema}.orders SET (autovacuum_enabled = false)")  # keep n_dead_tup honest
    snapshot_versions(conn, schema)
    return table_stats(conn, schema)


def diff_stats(before: dict, after: dict) -> dict:
    return {k: (after[k] - before[k]) if k.startswith("n_tup") else after[k] for k in after
            if after[k] is not None and before.get(k) is not None}


class ActivityWatch:
    """Polls pg_stat_activity of the bench database: the longest-running statement seen, for its plan."""

    def __init__(self):
        self.conn = bench_conn()
        self.longest: tuple[float, str] = (0.0, "")
        self._last = 0.0

    def __call__(self) -> None:
        if time.perf_counter() - self._last < 0.5:
            return
        self._last = time.perf_counter()
        rows = self.conn.execute(
            "SELECT extract(epoch FROM now() - query_start), query FROM pg_stat_activity WHERE datname = %s"
            " AND state = 'active' AND pid <> pg_backend_pid()", [DB]).fetchall()
        for seconds, query in rows:
            if seconds and float(seconds) > self.longest[0]:
                self.longest = (float(seconds), query)

    def close(self) -> None:
        self.conn.close()


def explain(conn, sql: str) -> str:
    """Plain EXPLAIN (nothing runs) of the first statement only: dlt sends `DELETE …; INSERT …` as one
    string, and the simple query protocol would run the INSERT. In a transaction rolled back anyway."""
    import psycopg

    statement = sql.split(";")[0].strip()
    try:
        with conn.transaction(force_rollback=True):
            return "\n".join(r[0] for r in conn.execute("EXPLAIN " + statement).fetchall())
    except psycopg.Error as exc:
        return f"(EXPLAIN failed: {exc})"


def dlt_run(fmt: str, schema: str, files: list[Path], label: str, timeout: float) -> dict:
    watch = ActivityWatch()
    try:
        cmd = [str(DLT_PYTHON), str(ROOT / "bench" / "dlt_load.py"), "--format", fmt, "--dsn", dsn().replace(f"{PG_USER}@", f"{PG_USER}:trust@"),  # dlt insists on a password; trust ignores it
               "--dataset", schema, "--pipelines-dir", str(WORK / "dlt_pipelines"), *map(str, files)]
        result = run(cmd, timeout, label, watch=watch)
    finally:
        watch.close()
    if result["timed_out"]:
        with admin() as conn:  # the backend would go on with the statement: stop it
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                         " AND pid <> pg_backend_pid()", [DB])
    seconds, query = watch.longest
    if query:
        result["longest_statement"] = {"seconds": round(seconds, 1), "sql": query[:2000]}
        if query.lstrip().upper().startswith("DELETE"):
            with bench_conn() as conn:
                result["longest_statement"]["plan"] = explain(conn, query)
    return result


# ---------------------------------------------------------------------------------------


def merge_mode_available() -> bool:
    return "merge_by_key" in (ROOT / "pipelines" / "steps" / "ingestion.py").read_text()


def median(results: list[dict], key: str = "wall") -> float | None:
    values = [r[key] for r in results if r.get("ok")]
    return statistics.median(values) if values else None


def fmt_s(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or not b else f"{a / b:.2f}×"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="full loads of COPY, staging and Railyard (median)")
    parser.add_argument("--no-dlt", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile one extra Railyard full load")
    parser.add_argument("--dlt-timeout", type=float, default=600, help="seconds per dlt full load")
    parser.add_argument("--dlt-reload-timeout", type=float, default=120,
                        help="seconds for dlt's re-load of the changed partition (a nested loop may never end)")
    opts = parser.parse_args(argv)

    started = datetime.now(UTC)
    stamp_start = f"{started:%Y-%m-%d %H:%M} UTC, load average {loadavg()}, {os.cpu_count()} cores"
    log(f"start: {stamp_start}")
    manifest = ensure_data()
    atexit.register(drop_everything)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    drop_everything()
    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{DB}"')
        pg_version = conn.execute("SHOW server_version").fetchone()[0]
    total_rows = ROWS_PER_DAY * len(DAYS)
    full_runs = [[i + 1, ds, "landing/{{ ds }}/orders.csv"] for i, ds in enumerate(DAYS)]
    modes = [("replace", {})] + ([("merge_by_key", {"write_mode": "merge_by_key"})] if merge_mode_available() else [])
    R: dict[str, list[dict] | dict] = {}

    # 1. COPY ceiling, with and without the key; 2. hand-written staging + delete/insert
    for label, kind, args in [
        ("copy_pk", "copy", {"schema": "copy_pk", "with_pk": True}),
        ("copy_nopk", "copy", {"schema": "copy_nopk", "with_pk": False}),
        ("staging", "staging", {"schema": "staging", "phase": "full"}),
    ]:
        R[label] = []
        for i in range(opts.repeat):
            checkpoint()
            R[label].append(run_child(kind, args, f"{label} #{i + 1}"))

    # 3. Railyard, each write mode in its own schema
    for mode, guardrails in modes:
        schema = f"ry_{mode}"
        key = f"railyard_{mode}"
        R[key] = []
        for i in range(opts.repeat):
            checkpoint()
            R[key].append(run_child("railyard", {"schema": schema, "runs": full_runs, "guardrails": guardrails,
                                                 "fresh": True}, f"railyard[{mode}] full #{i + 1}"))
        if opts.profile:
            checkpoint()
            R[f"{key}_profiled"] = run_child(
                "railyard", {"schema": f"{schema}_prof", "runs": full_runs, "guardrails": guardrails,
                             "fresh": True, "profile": True}, f"railyard[{mode}] full under cProfile")
        if not R[key][-1]["ok"]:
            continue
        with bench_conn() as conn:
            R[f"{key}_full_checksum"] = checksum(conn, schema)  # before the re-loads change it
            for phase, source, run_id in [("unchanged", "landing/{{ ds }}/orders.csv", 101),
                                          ("changed", "landing_changed/{{ ds }}/orders.csv", 102)]:
                before = prepare_reload(conn, schema)
                checkpoint()
                res = run_child("railyard", {"schema": schema, "runs": [[run_id, CHANGED_DS, source]],
                                             "guardrails": guardrails}, f"railyard[{mode}] re-load {phase}")
                res["stats"] = diff_stats(before, table_stats(conn, schema))
                res["rewritten"] = rewritten_rows(conn, schema)
                R[f"{key}_{phase}"] = res

    # Hand-written reference for the changed partition (the expected end state)
    checkpoint()
    R["staging_changed"] = run_child("staging", {"schema": "staging", "phase": "changed"}, "staging re-load changed")

    # 4. dlt
    dlt_ok = not opts.no_dlt and DLT_PYTHON.exists()
    if not opts.no_dlt and not DLT_PYTHON.exists():
        log(f"dlt: {DLT_PYTHON} missing; create it: python3.11 -m venv bench/.venv-dlt && "
            'bench/.venv-dlt/bin/pip install "dlt[postgres]" pyarrow')
    if dlt_ok:
        for fmt in ("parquet", "csv"):
            files = [parquet_file(ds) if fmt == "parquet" else landing_csv(ds) for ds in DAYS]
            checkpoint()
            R[f"dlt_{fmt}"] = dlt_run(fmt, f"dlt_{fmt}", files, f"dlt {fmt} full", opts.dlt_timeout)
        if R["dlt_parquet"]["ok"]:
            checkpoint()
            R["dlt_parquet_changed"] = dlt_run("parquet", "dlt_parquet", [parquet_file(CHANGED_DS, True)],
                                               "dlt parquet re-load changed", opts.dlt_reload_timeout)

    # 5. Same tables? Full load (after the full load schemas hold it) and end state after the changed re-load.
    checks = {}
    with bench_conn() as conn:
        expected_full = checksum(conn, "copy_pk")
        expected_end = checksum(conn, "staging")
        # merge_by_key is an upsert: rows deleted from the re-loaded file stay in the target.
        conn.execute("CREATE SCHEMA IF NOT EXISTS bench_meta")
        conn.execute(
            "CREATE TABLE bench_meta.orders AS SELECT * FROM staging.orders UNION ALL SELECT * FROM copy_pk.orders c"
            " WHERE c.dt = %s AND NOT EXISTS (SELECT 1 FROM staging.orders s WHERE s.dt = c.dt AND s.order_id = c.order_id)",
            [CHANGED_DS])
        expected_upsert = checksum(conn, "bench_meta")
        schemas = [s for (s,) in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname NOT IN"
            " ('information_schema', 'public', 'bench_meta') AND nspname NOT LIKE '%\\_staging'").fetchall()]
        for schema in sorted(schemas):
            if not conn.execute("SELECT to_regclass(%s)", [f"{schema}.orders"]).fetchone()[0]:
                continue
            count, digest = checksum(conn, schema)
            changed = schema.startswith("ry_") and not schema.endswith("_prof") or schema in ("staging",) or (
                schema == "dlt_parquet" and R.get("dlt_parquet_changed", {}).get("ok"))
            upsert = changed and "merge" in schema
            expected = expected_upsert if upsert else expected_end if changed else expected_full
            state = ("after changed re-load, upsert (rows deleted from the file kept)" if upsert
                     else "after changed re-load (partition replaced)" if changed else "full load")
            checks[schema] = {"rows": count, "md5": digest, "state": state,
                              "matches": (count, digest) == expected, "types": column_types(conn, schema)}
        for mode, _ in modes:
            if f"railyard_{mode}_full_checksum" in R:
                count, digest = R.pop(f"railyard_{mode}_full_checksum")
                checks[f"ry_{mode} (before the re-loads)"] = {
                    "rows": count, "md5": digest, "state": "full load", "matches": (count, digest) == expected_full,
                    "types": column_types(conn, f"ry_{mode}")}
    finished = datetime.now(UTC)
    stamp_end = f"{finished:%Y-%m-%d %H:%M} UTC, load average {loadavg()}"
    report = render(opts, R, checks, manifest, modes, stamp_start, stamp_end, pg_version, total_rows)
    print("\n" + report)
    (DATA / "last-run.md").write_text(report)
    (DATA / "last-run.json").write_text(json.dumps({"results": R, "checks": checks}, indent=1, default=str))
    log(f"report written to {(DATA / 'last-run.md').relative_to(ROOT)}")
    failed = [k for k, v in R.items() if isinstance(v, dict) and not v.get("ok")]
    failed += [k for k, v in R.items() if isinstance(v, list) and not all(r.get("ok") for r in v)]
    mismatched = [k for k, v in checks.items() if not v["matches"]]
    return 1 if (mismatched or [f for f in failed if not f.startswith("dlt_parquet_changed")]) else 0


def render(opts, R, checks, manifest, modes, stamp_start, stamp_end, pg_version, total_rows) -> str:
    dlt_version = next((R[k].get("dlt_version") for k in ("dlt_parquet", "dlt_csv") if k in R and R[k].get("ok")), None)
    lines = [
        f"Command: `.venv/bin/python bench/ingest_bench.py{' --no-dlt' if opts.no_dlt else ''}"
        f"{' --profile' if opts.profile else ''}` (repeat {opts.repeat}: median of the wall times)",
        f"Started {stamp_start}; finished {stamp_end}. PostgreSQL {pg_version} on the same machine (defaults:"
        " shared_buffers 128MB, fsync on); Python 3.11, psycopg 3" + (f"; dlt {dlt_version}" if dlt_version else "") + ".",
        f"Data: {total_rows:,} rows, {len(DAYS)} daily CSV files of {ROWS_PER_DAY:,} rows (seed {SEED}); changed"
        f" partition {CHANGED_DS}: {manifest.get('changed')}.",
        "",
        "Wall time of a subprocess measured from outside (interpreter start and imports included); "
        "peak RSS of that process (wait4 ru_maxrss; the PostgreSQL server's memory is not counted).",
        "",
        "| Load of 1,000,000 rows (10 partitions) | seconds | rows/s | vs COPY with key | peak RSS MB | load avg before → after |",
        "|---|---:|---:|---:|---:|---|",
    ]
    copy_pk = median(R["copy_pk"])

    def row(label: str, results) -> None:
        results = results if isinstance(results, list) else [results]
        wall = median(results)
        ok = [r for r in results if r.get("ok")]
        rss = max((r["rss_mb"] or 0) for r in results) if results else None
        loads = f"{results[0]['load_before']} → {results[-1]['load_after']}" if results else ""
        if not ok:
            err = results[0].get("error", "failed") if results else "not run"
            lines.append(f"| {label} | FAILED ({err}) | | | {rss or 0:.0f} | {loads} |")
            return
        spread = f" ({min(r['wall'] for r in ok):.2f}–{max(r['wall'] for r in ok):.2f})" if len(ok) > 1 else ""
        lines.append(f"| {label} | {wall:.2f}{spread} | {total_rows / wall:,.0f} | {fmt_ratio(wall, copy_pk)}"
                     f" | {rss:.0f} | {loads} |")

    row("Raw COPY, PRIMARY KEY (dt, order_id)", R["copy_pk"])
    row("Raw COPY, no key", R["copy_nopk"])
    row("Hand-written: COPY to temp staging + DELETE/INSERT per partition", R["staging"])
    for mode, _ in modes:
        row(f"Railyard extract→validate→load→publish, write mode {mode}", R[f"railyard_{mode}"])
    for fmt in ("parquet", "csv"):
        if f"dlt_{fmt}" in R:
            row(f"dlt merge/delete-insert, {fmt} ({'pyarrow tables' if fmt == 'parquet' else 'csv.DictReader dicts'})",
                R[f"dlt_{fmt}"])
    lines.append("")
    ry = median(R[f"railyard_{modes[-1][0]}"]) if modes else None
    ry_replace = median(R["railyard_replace"])
    lines.append("Ratios (goal in brackets): "
                 f"Railyard replace / COPY-with-key = {fmt_ratio(ry_replace, copy_pk)} [≤ {GOAL_VS_COPY}×]")
    if len(modes) > 1:
        lines.append(f"Railyard {modes[-1][0]} / COPY-with-key = {fmt_ratio(ry, copy_pk)} [≤ {GOAL_VS_COPY}×]")
    for fmt, goal in (("parquet", GOAL_VS_DLT_PARQUET), ("csv", GOAL_VS_DLT_CSV)):
        if f"dlt_{fmt}" in R and R[f"dlt_{fmt}"].get("ok"):
            lines.append(f"dlt-{fmt} / Railyard replace = {fmt_ratio(R[f'dlt_{fmt}']['wall'], ry_replace)} [≥ {goal}×]")
    lines.append("")
    lines.append("In-process seconds (without interpreter start): " + ", ".join(
        f"{k} {statistics.median([r['seconds'] for r in v if r.get('ok')]):.2f}"
        for k, v in R.items() if isinstance(v, list) and any(r.get("ok") for r in v)))
    for mode, _ in modes:
        ok = [r for r in R[f"railyard_{mode}"] if r.get("ok")]
        if ok:
            lines.append(f"Railyard {mode}, seconds per step (summed over 10 partitions, last run): {ok[-1]['steps']}")
    for fmt in ("parquet", "csv"):
        r = R.get(f"dlt_{fmt}")
        if r and r.get("ok"):
            lines.append(f"dlt {fmt} steps: {r.get('steps')}, import {r.get('import_seconds')} s")
    lines += ["", "| Re-load of partition " + CHANGED_DS + " | seconds | peak RSS MB | rows written (load step)"
              " | rows deleted (load step) | new tuple versions in partition | n_tup ins/upd/del | n_dead_tup after"
              " | load avg |", "|---|---:|---:|---:|---:|---:|---|---:|---|"]
    for mode, _ in modes:
        for phase in ("unchanged", "changed"):
            r = R.get(f"railyard_{mode}_{phase}")
            if not r:
                continue
            if not r.get("ok"):
                lines.append(f"| Railyard {mode}, {phase} | FAILED ({r.get('error')}) | | | | | | | |")
                continue
            load = r["loads"][0] if r.get("loads") else {}
            st = r["stats"]
            lines.append(
                f"| Railyard {mode}, {phase} | {r['wall']:.2f} | {r['rss_mb']:.0f} | {load.get('rows_written')}"
                f" | {load.get('metrics', {}).get('rows_deleted')} | {r['rewritten']['new_tuple_versions']:,}"
                f" of {r['rewritten']['partition_rows']:,} | {st.get('n_tup_ins')}/{st.get('n_tup_upd')}/"
                f"{st.get('n_tup_del')} | {st.get('n_dead_tup')} | {r['load_before']} → {r['load_after']} |")
    for key, label in (("staging_changed", "Hand-written staging, changed"),
                       ("dlt_parquet_changed", "dlt parquet, changed")):
        r = R.get(key)
        if r:
            secs = f"{r['wall']:.2f}" if r.get("ok") else f"FAILED ({r.get('error')})"
            lines.append(f"| {label} | {secs} | {r['rss_mb'] or 0:.0f} | | | | | | {r['load_before']} → {r['load_after']} |")
    lines += ["", "Same tables? (count and md5 of all columns as normalised text, ordered by dt, order_id)", "",
              "| schema | state | rows | md5 | matches | column types |", "|---|---|---:|---|---|---|"]
    for schema, c in checks.items():
        lines.append(f"| {schema} | {c['state']} | {c['rows']:,} | `{c['md5']}` | {'yes' if c['matches'] else 'NO'}"
                     f" | {c['types']} |")
    for key in ("dlt_parquet", "dlt_csv", "dlt_parquet_changed"):
        stmt = (R.get(key) or {}).get("longest_statement")
        if stmt:
            lines += ["", f"{key}: longest statement seen in pg_stat_activity ({stmt['seconds']} s):", "```sql",
                      stmt["sql"][:600], "```"]
            if stmt.get("plan"):
                lines += ["Its plan (plain EXPLAIN of the DELETE, taken after the run on the tables as they were left):",
                          "```", stmt["plan"], "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        print(json.dumps(CHILDREN[sys.argv[2]](json.loads(sys.argv[3])), default=str))
        sys.exit(0)
    sys.exit(main(sys.argv[1:]))
