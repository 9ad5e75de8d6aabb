"""`pipeline/` is the pure domain: importing all of it loads no broker, no Redis client
and nothing of `store/` or `tasks/` (the stages reach the store through a protocol)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pipeline

FORBIDDEN = ("celery", "kombu", "redis", "store", "tasks")


def test_pipeline_imports_no_transport_and_no_store() -> None:
    names = sorted(f"pipeline.{m.name}" for m in pkgutil.iter_modules(pipeline.__path__))
    assert "pipeline.stages" in names and "pipeline.store_protocol" in names
    code = (
        "import importlib, json, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    root = Path(pipeline.__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert not loaded & set(FORBIDDEN), sorted(loaded & set(FORBIDDEN))
