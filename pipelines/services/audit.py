from __future__ import annotations

from typing import Any

from django.db import models

from pipelines.models import AuditEvent


def audit(*, actor, action: str, obj: models.Model, details: dict[str, Any] | None = None) -> AuditEvent:
    return AuditEvent.objects.create(
        actor=actor if getattr(actor, "pk", None) else None,
        action=action,
        object_type=obj._meta.model_name,
        object_id=str(obj.pk),
        details=details or {},
    )
