"""dlt's side of bench/ingest_bench.py; run with dlt's own interpreter (bench/.venv-dlt/bin/python),
never Railyard's. Loads the orders partitions with write_disposition merge / delete-insert,
primary_key order_id + merge_key dt, fed either pyarrow tables read from the Parquet copies or
the CSV rows as dicts (csv.DictReader). Prints one JSON line: seconds inside this process, rows,
dlt's version, its peak RSS and its children's.

    bench/.venv-dlt/bin/python bench/dlt_load.py --format parquet --dsn postgresql://... \\
        --dataset dlt_parquet --pipelines-dir var/bench/ingest/dlt_work FILE [FILE ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--format", choices=("parquet", "csv"), required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--pipeline-name", default=None)
    parser.add_argument("--pipelines-dir", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    started = time.perf_counter()
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    import dlt

    imported = time.perf_counter()
    rows = 0

    @dlt.resource(
        name="orders",
        write_disposition={"disposition": "merge", "strategy": "delete-insert"},
        primary_key="order_id",
        merge_key="dt",
    )
    def orders():
        nonlocal rows
        for path in args.files:
            if args.format == "parquet":
                import pyarrow.parquet as pq

                table = pq.read_table(path)
                rows += table.num_rows
                yield table
            else:
                with open(path, newline="", encoding="utf-8") as fh:
                    for row in csv.DictReader(fh):
                        rows += 1
                        yield row

    pipeline = dlt.pipeline(
        pipeline_name=args.pipeline_name or f"bench_{args.dataset}",
        destination=dlt.destinations.postgres(credentials=args.dsn),
        dataset_name=args.dataset,
        pipelines_dir=args.pipelines_dir,
        progress=None,
    )
    info = pipeline.run(orders())
    finished = time.perf_counter()
    steps = {}
    trace = pipeline.last_trace
    if trace is not None:
        for step in trace.steps:
            if step.started_at and step.finished_at:
                steps[step.step] = round((step.finished_at - step.started_at).total_seconds(), 3)
    print(json.dumps({
        "seconds": round(finished - imported, 3),
        "import_seconds": round(imported - started, 3),
        "rows": rows,
        "dlt_version": dlt.__version__,
        "steps": steps,
        "failed_jobs": bool(info.has_failed_jobs),
        "maxrss_self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "maxrss_children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
