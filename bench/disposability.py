"""Benchmark the disposability of each process type: start to ready, SIGTERM to exit, and the
recovery time after kill -9 of a worker's work horse mid-job. Median of N runs (default 5).

Run with ``make bench`` (embedded servers) or with DATABASE_URL / REDIS_URL / EMAIL_URL set:
``python bench/disposability.py [--runs 5]``. Prints one table; the floor, measured in the same
run: a fresh interpreter's ``django.setup()`` (to its return) for start, and a fresh interpreter
that exits on SIGTERM for stop. "Ready" per type is as project/procfile.py says: web answers
``GET /health`` with 200; the worker, the scheduler and the mailer print their ``READY_LINES`` line.
"""

import argparse
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import django  # noqa: E402

django.setup()
logging.getLogger("orders").setLevel(logging.WARNING)  # keep the table readable

from orders.models import Order, Product, SandboxCharge  # noqa: E402
from orders.services import LineRequest, order_create  # noqa: E402
from tests.procfile import Process, process_env, run_release  # noqa: E402
from tests.support import free_port, wait_until  # noqa: E402


def measure_type(kind: str, env: dict[str, str]) -> tuple[float, float]:
    began = time.monotonic()
    process = Process(kind, env)
    try:
        process.wait_ready(deadline=30, interval=0.01)
        up = time.monotonic() - began
        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(deadline=60)
        down = time.monotonic() - stopping
        if code != 0:
            raise SystemExit(f"{kind} exited {code} on SIGTERM:\n{process.output()}")
        return up, down
    finally:
        process.close()


def measure_floor(env: dict[str, str]) -> tuple[float, float]:
    began = time.monotonic()
    setup = subprocess.Popen(
        [sys.executable, "-c", "import django, sys; django.setup(); print('up', flush=True); sys.stdin.read()"],
        env=env,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    setup.stdout.readline()  # django.setup() has returned: the same point as a subject's "ready"
    up = time.monotonic() - began
    setup.stdin.close()
    setup.wait(timeout=30)
    sleeper = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); signal.pause()",
        ]
    )
    time.sleep(0.3)  # let the interpreter install its handler; this process is the floor, not a subject
    stopping = time.monotonic()
    sleeper.send_signal(signal.SIGTERM)
    sleeper.wait(timeout=10)
    return up, time.monotonic() - stopping


def measure_recovery(env: dict[str, str]) -> float:
    product, _ = Product.objects.get_or_create(sku="bench-mug", defaults={"name": "Bench mug", "price": 100})
    Product.objects.filter(pk=product.pk, stock=0).update(stock=100)  # each run's order takes one
    processes = [Process("scheduler", env), Process("worker", {**env, "PAYMENT_SANDBOX_LATENCY_MS": "1000"})]
    try:
        for process in processes:
            process.wait_ready(deadline=30, interval=0.01)
        order, _ = order_create(
            email="bench@example.com", lines=[LineRequest(product.pk, 1)], idempotency_key=uuid.uuid4()
        )
        key = str(order.idempotency_key)
        wait_until(lambda: SandboxCharge.objects.filter(idempotency_key=key).exists(), deadline=30, message="charge")
        horse = psutil.Process(processes[1].pid).children()[0]
        horse.kill()
        killed = time.monotonic()
        wait_until(lambda: Order.objects.get(pk=order.pk).status == "paid", deadline=120, interval=0.05, message="paid")
        return time.monotonic() - killed
    finally:
        for process in processes:
            process.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    env = process_env(PORT=str(free_port()), WEB_CONCURRENCY="2", ORDER_SWEEP_INTERVAL="1", ORDER_STUCK_AFTER="2")
    release = run_release(env)
    if release.returncode:
        raise SystemExit(release.stderr)
    floors = [measure_floor(env) for _ in range(args.runs)]
    floor_up = statistics.median(f[0] for f in floors)
    floor_down = statistics.median(f[1] for f in floors)
    print(f"{'process type':<14}{'start→ready s':>14}{'× floor':>9}{'SIGTERM→exit s':>16}{'× floor':>9}")
    print(f"{'floor':<14}{floor_up:>14.3f}{1:>9.1f}{floor_down:>16.3f}{1:>9.1f}")
    for kind in ("web", "worker", "scheduler", "mailer"):
        runs = [measure_type(kind, env) for _ in range(args.runs)]
        up = statistics.median(r[0] for r in runs)
        down = statistics.median(r[1] for r in runs)
        print(f"{kind:<14}{up:>14.3f}{up / floor_up:>9.1f}{down:>16.3f}{down / floor_down:>9.1f}")
    recoveries = [measure_recovery(env) for _ in range(args.runs)]
    print(
        f"\nrecovery after kill -9 of the work horse mid-job (ORDER_STUCK_AFTER=2, ORDER_SWEEP_INTERVAL=1, "
        f"scheduler --interval 5): median {statistics.median(recoveries):.1f}s over {args.runs} runs "
        f"(min {min(recoveries):.1f}s, max {max(recoveries):.1f}s)"
    )


if __name__ == "__main__":
    main()
