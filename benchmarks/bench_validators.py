"""Validators compared on real job messages (built from the corpus) and real extra.treeherder configs.

python-jsonschema (Treeherder's validator, the reference), fastjsonschema and jsonschema-rs, each on the
project's schemas, plus the hot path the core uses (jsonschema-rs, with python-jsonschema judging only
rejections). Prints microseconds per document and each engine's disagreements with the reference.

    .venv/bin/python benchmarks/bench_validators.py [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import fastjsonschema  # noqa: E402
import jsonschema  # noqa: E402
import jsonschema_rs  # noqa: E402

from streams.core.envelope import parse_envelope  # noqa: E402
from streams.core.rules import Rules  # noqa: E402
from streams.core.schemas import load_schema  # noqa: E402
from streams.core.transform import transform  # noqa: E402
from streams.core.validation import config_check, job_check  # noqa: E402

CORPUS = ROOT / ".." / "shared" / "reference" / "treeherder-corpus"


def corpus_documents() -> tuple[list[dict], list[dict]]:
    messages = json.loads((CORPUS / "taskcluster_pulse_messages.json").read_text())
    tasks = json.loads((CORPUS / "taskcluster_tasks.json").read_text())
    listing = [{"name": f"public/test_info/file{i}.log"} for i in range(5)]
    jobs, configs = [], []
    for task_id, message in sorted(messages.items()):
        envelope = {
            "exchange": message["exchange"],
            "routingKey": message["routes"],
            "payload": message["payload"],
            "rootUrl": message["root_url"],
        }
        outcome = transform(parse_envelope(envelope), tasks[task_id], listing, Rules())
        jobs.append(outcome.messages[0].job)
        configs.append(tasks[task_id]["extra"]["treeherder"])
    return jobs, configs


def tricky_jobs(job: dict) -> list[dict]:
    """Values where the engines' regex and format rules differ."""
    out = []
    for path, value in [
        (("origin", "project"), "projé"),
        (("buildMachine", "platform"), "linux\n"),
        (("labels",), ["opt٣"]),
        (("timeScheduled",), "yesterday"),
        (("logs", 0, "url"), "not a uri"),
        (("owner",), "o" * 51),
        (("buildMachine", "platform"), "linux 64"),
        (("tier",), True),
    ]:
        doc = copy.deepcopy(job)
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        out.append(doc)
    return out


def engines(schema: dict, check) -> dict:
    reference = jsonschema.validators.validator_for(schema)(schema)
    fast_default = fastjsonschema.compile(schema)
    fast_plain = fastjsonschema.compile(schema, use_default=False, use_formats=False)
    rs_default = jsonschema_rs.validator_for(schema)
    rs_plain = jsonschema_rs.validator_for(schema, validate_formats=False)

    def fj(compiled):
        def valid(doc):
            try:
                compiled(copy.deepcopy(doc) if compiled is fast_default else doc)
                return True
            except fastjsonschema.JsonSchemaValueException:
                return False

        return valid

    return {
        "python-jsonschema (reference)": reference.is_valid,
        "fastjsonschema (defaults: formats on, inserts defaults)": fj(fast_default),
        "fastjsonschema (use_default=False, use_formats=False)": fj(fast_plain),
        "jsonschema-rs (defaults: formats on)": rs_default.is_valid,
        "jsonschema-rs (validate_formats=False)": rs_plain.is_valid,
        "hot path (jsonschema-rs, reference judges rejections)": lambda doc: check.errors(doc) is None,
    }


def measure(documents: list[dict], validators: dict, tricky: list[dict]) -> dict:
    reference = validators["python-jsonschema (reference)"]
    results = {}
    for name, valid in validators.items():
        number = 3 if name.startswith("python") else 50
        seconds = min(timeit.repeat(lambda v=valid: [v(d) for d in documents], number=number, repeat=3))
        disagreements = sum(valid(d) != reference(d) for d in documents + tricky)
        results[name] = {
            "us_per_document": round(seconds / number / len(documents) * 1e6, 2),
            "disagreements": disagreements,
            "of": len(documents) + len(tricky),
        }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not CORPUS.is_dir():
        print(f"corpus not found at {CORPUS.resolve()}", file=sys.stderr)
        return 2
    jobs, configs = corpus_documents()
    report = {
        "pulse-job": measure(
            jobs, engines(load_schema("pulse-job"), job_check()), tricky_jobs(next(j for j in jobs if "logs" in j))
        ),
        "task-treeherder-config": measure(
            configs,
            engines(load_schema("task-treeherder-config"), config_check()),
            [{"symbol": "B", "machine": {"platform": "linux\n"}}],
        ),
    }
    if args.json:
        print(json.dumps(report))
        return 0
    for schema, rows in report.items():
        print(f"{schema} ({len(jobs)} corpus documents + tricky cases)")
        for name, row in rows.items():
            print(f"  {row['us_per_document']:>8.2f} us  {row['disagreements']} disagreements  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
