"""The floor of the ingester benchmark: ``JobLoader().process_job`` called on each job in a plain loop.

Run with Treeherder's Python and settings: reads JSON lines ``{"job": ..., "rootUrl": ...}`` from the file named
on the command line, stores them one after the other, prints one JSON line ``{"jobs", "stored", "seconds"}``.
Imports nothing of tc-treeherder.
"""

import json
import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "treeherder.config.settings")

import django

django.setup()

from treeherder.etl.job_loader import JobLoader  # noqa: E402


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle if line.strip()]
    began = time.perf_counter()
    stored = sum(1 for line in lines if JobLoader().process_job(line["job"], line["rootUrl"]))
    seconds = time.perf_counter() - began
    print(json.dumps({"jobs": len(lines), "stored": stored, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
