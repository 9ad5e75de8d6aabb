"""Screenshots of Flower for the README, taken with headless Chromium.

    .venv/bin/python docs/flower_screenshots.py      (or `make screenshots`)

Runs the real thing on this machine, in a temporary directory: an embedded Redis, the
fake myKaarma, one `leadpipe worker`-style worker and `leadpipe flower`; sends a few
leads as an upstream system would (valid ones, one with an invalid email and VIN,
one myKaarma rejects, each carrying a customer's name and email); waits until Flower
has seen a dead lead fail; then saves three pages with Debian's `chromium`:

    docs/flower-dashboard.png    the workers dashboard: Failed counts the dead leads
    docs/flower-failed.png       the Failed filter: each dead lead's task and its LeadDead
    docs/flower-task.png         an ingest task: payload masked, partner shown

It fails when a customer's name or email appears in any page it shot. Not part of
`make test` (CI may have no Chromium); everything is stopped at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from celery import Celery  # noqa: E402

from leadpipe.demo_samples import BEHAVIOURS, ROUTING  # noqa: E402
from leadpipe.fake_mykaarma import FakeMyKaarma  # noqa: E402
from leadpipe.runner import WorkerProcess, WorkerSpec  # noqa: E402
from store.embedded import ensure_embedded_redis, free_port, stop_embedded_redis  # noqa: E402
from tasks.queues import ALL_QUEUES  # noqa: E402

DOCS = ROOT / "docs"
USER, PASSWORD = "svc-demo", "demo-Pa55"
#: The customer's details every sample lead carries; no screenshot page may show them.
CANARIES = ("Wilhelmina", "Quackenbush", "w.quackenbush@example.com")
WINDOW = "1600,760"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("no Chromium: apt-get install -y chromium")


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (127.0.0.1)
        return str(response.read().decode(errors="replace"))


def poll(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise SystemExit(f"{what}: not within {timeout}s")


def payload(**vehicle: Any) -> dict[str, Any]:
    return {
        "lead": {"firstName": CANARIES[0], "lastName": CANARIES[1], "email": CANARIES[2]},
        "vehicle": vehicle or {"vin": "1HGCM82633A004352", "state": "CA", "mileage": 42000},
        "transactionId": f"shot-{uuid.uuid4().hex[:10]}",
    }


def shoot(url: str, out: Path, work: Path, budget_ms: int = 6000) -> None:
    """One page to a PNG, after `budget_ms` of the page's own time (its tables load
    over XHR)."""
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=work))
    subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--hide-scrollbars",
            f"--window-size={WINDOW}",
            f"--virtual-time-budget={budget_ms}",
            f"--screenshot={out}",
            url,
        ],
        check=True,
        timeout=120,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    print(f"saved {out.relative_to(ROOT)}")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="leadpipe-shots-"))
    home = work / "home"
    redis_url = ensure_embedded_redis(home)
    fake = FakeMyKaarma(username=USER, password=PASSWORD, behaviours=dict(BEHAVIOURS)).start()
    routing = work / "routing.toml"
    routing.write_text(ROUTING)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEADPIPE_", "FLOWER_"))} | {
        "LEADPIPE_HOME": str(home),
        "LEADPIPE_REDIS_URL": redis_url,
        "MYKAARMA_BASE_URL": fake.url,
        "MYKAARMA_USERNAME": USER,
        "MYKAARMA_PASSWORD": PASSWORD,
        "LEADPIPE_ROUTING_FILE": str(routing),
        "FLOWER_UNAUTHENTICATED_API": "true",  # loopback only; lets this script poll the API
    }
    worker = WorkerProcess(WorkerSpec("shots", ALL_QUEUES, "threads", 4), env, work / "w.log")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    leadpipe = str(Path(sys.executable).with_name("leadpipe"))
    flower = subprocess.Popen(
        [leadpipe, "flower", "--port", str(port)],
        env=env,
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=open(work / "flower.log", "wb"),  # noqa: SIM115 (lives as long as Flower)
        start_new_session=True,
    )
    sender = Celery("upstream", broker=redis_url)
    try:
        worker.start().wait_ready()
        poll("Flower", lambda: fetch(base + "/healthcheck") == "OK")
        poll("the worker in Flower", lambda: json.loads(fetch(base + "/api/workers?refresh=1")))

        def dead_lead_failed() -> str | None:
            """Send a round of leads; the id of a FAILURE ingest's sibling, once seen."""
            ids = [
                sender.send_task("leads.ingest", args=[payload()], kwargs={"partner": "acme"}).id,
                sender.send_task(
                    "leads.ingest",
                    args=[{**payload(), "lead": {**payload()["lead"], "email": "not-an-email"}}],
                    kwargs={"partner": "acme"},
                ).id,
                sender.send_task("leads.ingest", args=[payload()], kwargs={"partner": "picky"}).id,
            ]
            deadline = time.monotonic() + 5  # Flower turns events on a few s after start
            while time.monotonic() < deadline:
                failed = json.loads(fetch(base + "/api/tasks?state=FAILURE"))
                if any(ids[1] in str(t.get("args")) for t in failed.values()):
                    return str(ids[1])
                time.sleep(0.3)
            return None

        lead_id = poll("a dead lead failing in Flower", dead_lead_failed, timeout=90)
        pages = {
            "flower-dashboard.png": base + "/",
            "flower-failed.png": base + "/tasks?state=FAILURE",
            "flower-task.png": f"{base}/task/{lead_id}",
        }
        for url in pages.values():
            body = fetch(url) + fetch(base + "/api/tasks")
            leaked = [c for c in CANARIES if c.lower() in body.lower()]
            if leaked:
                raise SystemExit(f"customer data in {url}: {leaked}")
        for name, url in pages.items():
            shoot(url, DOCS / name, work)
    finally:
        sender.close()
        os.killpg(flower.pid, 9)
        flower.wait(timeout=10)
        worker.stop(timeout=20)
        fake.stop()
        stop_embedded_redis(home)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
