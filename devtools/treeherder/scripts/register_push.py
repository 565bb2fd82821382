"""Register pushes in a local Treeherder, as its push ingestion does in production (a Push and its Commit).

Run with Treeherder's Python and settings (devtools/treeherder/local.py does): reads a JSON list of
``{"project", "revision", "author"}`` on stdin, prints one JSON line: ``[{"project", "revision", "push_id",
"created"}, ...]``, with ``push_id`` None for a project Treeherder does not know. Registering an existing push
changes nothing. This file runs outside tc-treeherder's
packages and imports none of them.
"""

import json
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "treeherder.config.settings")

import django

django.setup()

from django.utils import timezone  # noqa: E402
from treeherder.model.models import Commit, Push, Repository  # noqa: E402


def main() -> int:
    done = []
    for entry in json.load(sys.stdin):
        try:
            repository = Repository.objects.get(name=entry["project"])
        except Repository.DoesNotExist:
            done.append({"project": entry["project"], "revision": entry["revision"], "push_id": None,
                         "created": False})
            continue
        push, created = Push.objects.get_or_create(
            repository=repository, revision=entry["revision"],
            defaults={"author": entry.get("author") or "tc-treeherder", "time": timezone.now()})
        if created:
            Commit.objects.get_or_create(push=push, revision=entry["revision"], defaults={
                "author": push.author, "comments": "registered by tc-treeherder treeherder push"})
        done.append({"project": repository.name, "revision": push.revision, "push_id": push.id,
                     "created": created})
    print(json.dumps(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
