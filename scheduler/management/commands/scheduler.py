from django.core.management.base import BaseCommand

from scheduler.loop import run_forever


class Command(BaseCommand):
    help = "Run the scheduler service: create due runs, start them, retry, reap. Run several for HA."

    def add_arguments(self, parser):
        parser.add_argument("--tick", type=float, default=None, help="Seconds between ticks (default 1).")
        parser.add_argument("--ticks", type=int, default=None, help="Stop after this many ticks (tests).")

    def handle(self, *args, tick=None, ticks=None, **options):
        self.stdout.write("Railyard scheduler started; Ctrl-C to stop.")
        try:
            run_forever(tick_seconds=tick, max_ticks=ticks)
        except KeyboardInterrupt:
            self.stdout.write("scheduler stopped")
