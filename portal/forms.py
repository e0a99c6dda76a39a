"""Page forms. They collect and shape input; the services validate it (one validator for the
form and the API) and their errors are mapped back onto the fields here."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from pipelines.models import Backfill
from pipelines.selectors import source_connections, teams_for_user

COMMON_TIMEZONES = [
    "UTC", "Europe/London", "Europe/Paris", "Europe/Berlin", "Europe/Madrid", "Europe/Amsterdam",
    "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles", "America/Sao_Paulo",
    "Asia/Tokyo", "Asia/Singapore", "Asia/Kolkata", "Asia/Shanghai", "Australia/Sydney",
    "Australia/Lord_Howe", "Pacific/Auckland", "Africa/Johannesburg",
]


def _split(value: str) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


class ServiceErrorsMixin:
    """Map a service's `ValidationError.message_dict` onto form fields.

    `service_field_map` renames service keys to form fields; unknown keys become
    non-field errors prefixed with the key so the message still names what to fix."""

    service_field_map: dict[str, str] = {}

    def add_service_errors(self, exc: ValidationError) -> None:
        if not hasattr(exc, "error_dict"):
            self.add_error(None, exc)  # type: ignore[attr-defined]
            return
        for key, messages in exc.message_dict.items():
            name = self.service_field_map.get(key, key)
            if name in self.fields:  # type: ignore[attr-defined]
                self.add_error(name, messages)  # type: ignore[attr-defined]
            else:
                label = key.replace("_", " ").capitalize()
                self.add_error(None, [f"{label}: {message}" for message in messages])  # type: ignore[attr-defined]


class PipelineForm(ServiceErrorsMixin, forms.Form):
    """The minimal form of the partitioned-ingestion template."""

    service_field_map = {"slug": "name", "wait_for_source": "wait_for_source_minutes"}
    INPUT_FIELDS = (
        "schedule", "timezone", "source_connection", "source", "primary_key", "partition_column",
        "source_filter_column", "target_table",
    )

    name = forms.CharField(
        max_length=63, required=False, help_text="Lowercase letters, digits, '-' and '_', e.g. daily_sales_load.",
        widget=forms.TextInput(attrs={"placeholder": "daily_sales_load", "autocomplete": "off", "required": True}),
    )
    team = forms.ModelChoiceField(queryset=None, empty_label=None)
    source_connection = forms.ChoiceField(choices=(), required=False, help_text="Connections of the dev environment.")
    source = forms.CharField(
        required=False, help_text="A table name, or a file path template such as landing/{{ ds }}/sales.csv.",
        widget=forms.TextInput(attrs={"placeholder": "landing/{{ ds }}/sales.csv", "required": True}),
    )
    schedule = forms.CharField(
        required=False, initial="30 2 * * *", help_text="Cron: minute hour day-of-month month day-of-week, or @daily.",
        widget=forms.TextInput(attrs={"placeholder": "30 2 * * *", "autocomplete": "off", "required": True}),
    )
    timezone = forms.CharField(
        required=False, initial="UTC", help_text="An IANA zone; cron fields are read in its wall clock.",
        widget=forms.TextInput(attrs={"list": "timezones", "autocomplete": "off", "required": True}),
    )
    primary_key = forms.CharField(
        required=False, help_text="Comma-separated columns that identify a row.",
        widget=forms.TextInput(attrs={"placeholder": "order_id", "required": True}),
    )
    partition_column = forms.CharField(
        required=False, help_text="The warehouse column that holds ds; each run replaces one partition.",
        widget=forms.TextInput(attrs={"placeholder": "dt", "required": True}),
    )
    source_filter_column = forms.CharField(
        required=False, help_text="SQL sources only: the column compared with ds when extracting.",
    )
    target_table = forms.CharField(required=False, help_text="Defaults to the pipeline's name.")
    wait_for_source_minutes = forms.IntegerField(
        required=False, min_value=1, max_value=1440, label="Wait for the source (minutes)",
        help_text="Optional: poke every minute until the partition's file or rows appear, up to this long.",
    )
    runbook_url = forms.CharField(
        required=False, label="Runbook URL", help_text="Where on-call looks when this pipeline fails.",
        widget=forms.URLInput(attrs={"placeholder": "https://wiki.example.com/runbooks/sales"}),
    )
    tags = forms.CharField(required=False, help_text="Comma-separated, e.g. sales, finance.")

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams_for_user(user=user)
        self.fields["source_connection"].choices = [("", "— choose a connection —")] + [
            (c.name, f"{c.name} ({c.get_kind_display()})") for c in source_connections()
        ]

    def service_inputs(self) -> dict[str, str]:
        inputs = {name: (self.cleaned_data.get(name) or "").strip() for name in self.INPUT_FIELDS}
        for optional in ("target_table", "source_filter_column"):  # the service fills the defaults
            if not inputs[optional]:
                del inputs[optional]
        if self.cleaned_data.get("wait_for_source_minutes"):
            inputs["wait_for_source"] = {"poke_seconds": 60,
                                         "timeout_seconds": self.cleaned_data["wait_for_source_minutes"] * 60}
        return inputs

    def tag_list(self) -> list[str]:
        return _split(self.cleaned_data.get("tags", ""))


class CronPreviewForm(forms.Form):
    schedule = forms.CharField(required=False)
    timezone = forms.CharField(required=False)


class TriggerForm(ServiceErrorsMixin, forms.Form):
    date = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), label="Date")
    environment = forms.CharField(required=False, widget=forms.HiddenInput)


class BackfillForm(ServiceErrorsMixin, forms.Form):
    start = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), label="Start date")
    end = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), label="End date")
    reprocess = forms.ChoiceField(choices=Backfill.Reprocess.choices, initial=Backfill.Reprocess.MISSING)
    max_active_runs = forms.IntegerField(min_value=1, max_value=64, initial=1, label="Max active runs")
    environment = forms.CharField(required=False, widget=forms.HiddenInput)
