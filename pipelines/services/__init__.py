"""Writes. Keyword-only `<entity>_<action>` functions that validate, run in a transaction
and leave an audit trail. Views, API, commands and Celery tasks only call these."""

from pipelines.services.backfills import backfill_cancel, backfill_create
from pipelines.services.connections import connection_resolve, connection_save
from pipelines.services.pipelines import deployment_set_paused, pipeline_create
from pipelines.services.runs import logical_date_for, run_cancel, run_create, run_rerun, run_trigger

__all__ = [
    "backfill_cancel",
    "backfill_create",
    "connection_resolve",
    "connection_save",
    "deployment_set_paused",
    "logical_date_for",
    "pipeline_create",
    "run_cancel",
    "run_create",
    "run_rerun",
    "run_trigger",
]
