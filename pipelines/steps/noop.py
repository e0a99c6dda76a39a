"""A built-in no-op chain for benchmarks: three tasks that succeed at once, so a benchmark
measures the scheduler, broker and bookkeeping and nothing else (bench/throughput_bench.py)."""

from __future__ import annotations

from pipelines.steps.base import StepContext, StepResult


def noop(ctx: StepContext) -> StepResult:
    return StepResult()
