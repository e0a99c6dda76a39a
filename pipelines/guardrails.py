"""Guardrails: the standards a template bakes into every pipeline made from it.

Template.guardrails holds a platform team's overrides; `resolve_guardrails` fills the rest
from DEFAULTS, so a version always carries the complete, explicit set it runs under.
"""

from __future__ import annotations

import random
from typing import Any

DEFAULTS: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": 300,
    "retry_exponential_backoff": True,
    "max_retry_delay_seconds": 3600,
    "execution_timeout_seconds": 1200,
    "catchup": False,
    "max_active_runs": 1,
    "write_mode": "replace_partition",
    "lookback": 0,
    "allow_schema_changes": False,
    # max_rejected_fraction is not set here: it defaults by environment (0 in stage and prod,
    # 0.01 in dev); a template may set it.
    "quality": {"min_rows": 1},
    "require_owner": True,
}

def resolve_guardrails(template_guardrails: dict[str, Any]) -> dict[str, Any]:
    resolved = {**DEFAULTS, **(template_guardrails or {})}
    resolved["quality"] = {**DEFAULTS["quality"], **(template_guardrails or {}).get("quality", {})}
    return resolved


def retry_delay_seconds(guardrails: dict[str, Any], retry_number: int, *, rng: random.Random | None = None) -> float:
    """Wait before retry n (n >= 1): delay × 2^(n−1) with exponential backoff, capped, with
    up to 10 % jitter downwards so retries of many tasks do not arrive in lockstep."""
    base = float(guardrails.get("retry_delay_seconds", DEFAULTS["retry_delay_seconds"]))
    if guardrails.get("retry_exponential_backoff", True):
        base = base * (2 ** max(retry_number - 1, 0))
    capped = min(base, float(guardrails.get("max_retry_delay_seconds", DEFAULTS["max_retry_delay_seconds"])))
    jitter = (rng or random).uniform(0.9, 1.0)
    return capped * jitter
