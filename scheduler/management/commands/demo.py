"""Start web + scheduler + one worker as one command; Ctrl-C stops all three."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand

from pipelines.demo import DEMO_USERS


class Command(BaseCommand):
    help = "Run the web server, the scheduler and a Celery worker together (for the demo and development)."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--concurrency", type=int, default=2, help="Worker processes.")

    def handle(self, *args, port: int, concurrency: int, **options):
        python = sys.executable
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        commands = {
            "web": [python, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            "scheduler": [python, "manage.py", "scheduler"],
            "worker": [python, "-m", "celery", "-A", "portal", "worker", "--loglevel=INFO",
                       f"--concurrency={concurrency}", "--queues=default", "--without-gossip", "--without-mingle"],
        }
        # SIGTERM (e.g. from `timeout` or a process manager) stops the three as Ctrl-C does.
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        processes = {name: subprocess.Popen(cmd, env=env) for name, cmd in commands.items()}
        self.stdout.write(self.style.SUCCESS(f"\nRailyard is running at http://127.0.0.1:{port}/"))
        self.stdout.write("Sign in as " + ", ".join(f"{u} / {p}" for u, p, _, _ in DEMO_USERS))
        self.stdout.write("Ctrl-C stops web, scheduler and worker.\n")
        try:
            while True:
                for name, process in processes.items():
                    if process.poll() is not None:
                        self.stderr.write(f"{name} exited with code {process.returncode}; stopping the others.")
                        return
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            for process in processes.values():
                try:
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
            self.stdout.write("stopped web, scheduler and worker")
