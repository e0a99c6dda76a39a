"""The run page shows the rows a run quarantined instead of loading."""

from __future__ import annotations

from tests import factories
from tests.runner import run_until_idle


def test_the_run_page_lists_quarantined_rows_with_their_reason(client, builtins, tmp_path, now):
    from pipelines.models import Run

    team = factories.make_team("analytics")
    author = factories.make_user("alice", team=team)
    (tmp_path / "landing").mkdir()
    factories.make_connection("landing", "files", {"base_path": str(tmp_path / "landing")})
    factories.make_connection("warehouse", "sqlite", {"path": str(tmp_path / "warehouse.sqlite3")})
    factories.write_sales_csv(tmp_path / "landing", "2026-01-09", rows=300)
    with open(tmp_path / "landing" / "2026-01-09" / "sales.csv", "a") as fh:
        fh.write("20260109-99999,17,SKU-1,not-a-number-of-fields\n")
    factories.make_ingestion_pipeline(owner=author, now=now)
    run_until_idle(now)
    run = Run.objects.get()
    assert run.state == Run.State.SUCCESS, run.error

    client.force_login(author)
    page = client.get(f"/runs/{run.pk}/").content.decode()

    assert "Rejected rows" in page
    assert "20260109-99999" in page
