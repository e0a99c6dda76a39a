from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from pipelines.demo import DEMO_USERS, seed


class Command(BaseCommand):
    help = "Seed the demo: users, connections, 14 days of data and three pipelines (idempotent)."

    def handle(self, *args, **options):
        made = seed(data_dir=settings.RAILYARD_DATA_DIR / "demo", now=timezone.now(), stdout=self.stdout.write)
        self.stdout.write(f"pipelines created: {', '.join(made) or 'none (already seeded)'}")
        self.stdout.write("logins: " + ", ".join(f"{u} / {p}" for u, p, _, _ in DEMO_USERS))
