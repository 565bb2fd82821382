"""The README's main job: ``tc-treeherder demo`` runs the bridge on a simulated workload and says how it went."""

from __future__ import annotations

import subprocess
import sys


def test_demo_delivers_every_expected_job_and_summarises(test_env):
    result = subprocess.run(
        [sys.executable, "-m", "tc_treeherder.cli", "demo", "--tasks", "60", "--idle-timeout", "60"],
        env=test_env, capture_output=True, text=True, timeout=300,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.split("Summary", 1)[1]
    expected = int(summary.split("jobs expected", 1)[1].split()[0])
    received = int(summary.split("jobs received", 1)[1].split()[0])
    assert expected > 0 and received == expected
    assert "events/s" in summary
    assert "ignored: task has no extra.treeherder section" in summary, "the summary names why events were dropped"
