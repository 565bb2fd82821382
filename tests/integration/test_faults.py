"""Crashes mid-stream lose no job: the fault lab's short scenario on the real brokers.

One workload of a few thousand simulated task events runs through the real source, worker and sink; while it
flows the worker, the sink and the source are each killed with SIGKILL (and restarted), and the Queue API
answers 500 to everything for a while. The simulator's oracle says which jobs must reach the jobs exchange
and in which state each run ends. The full matrix, with figures, is ``make faults`` (benchmarks/faults.py).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.faults_lab import FaultSpec, Lab, catalogue, queue_api, run_scenario
from devtools.stack.shared import Brokers
from streams.shared.settings import load_settings
from streams.worker.app import BATCH_SIZE, IN_FLIGHT

# Small windows make the duplicate bound tight enough to catch a replay of the whole stream.
PREFETCH = 200
SINK_WINDOW = 200


async def test_kills_of_each_process_and_queue_api_errors_lose_no_job(brokers: Brokers, tmp_path: Path):
    env = {"TC_TREEHERDER_SOURCE_PREFETCH": str(PREFETCH), "TC_TREEHERDER_SINK_MAX_IN_FLIGHT": str(SINK_WINDOW)}
    specs = catalogue(load_settings(env=env))
    faults = [specs["worker-kill9"], specs["sink-kill9"], specs["source-kill9"],
              FaultSpec("queue-api-500", "every Queue API request answers 500 for 8 s", queue_api(8, status=500),
                        "retried in place: 0")]
    lab = Lab(kafka_bootstrap=brokers.kafka_bootstrap, pulse_url=brokers.pulse_url, work_dir=tmp_path,
              management_url=brokers.management_url)

    result = await run_scenario(lab, faults, events=4000, seed=21, workers=1, store="rocksdb://", partitions=2,
                                start_at=0.15, spacing=0.15, idle=60, limit=240, env=env)

    v = result.verdict
    assert v.lost == 0, f"{v.lost} jobs never reached the exchange: {v.examples}; {result.notes}"
    assert v.wrong_final == 0, f"{v.wrong_final} runs did not end in their final state: {v.examples}"
    assert v.unexpected == 0, "no job for a run the oracle expects none from"
    # Each kill replays one bounded window, never the stream: the source at most its prefetch, the sink its
    # in-flight window plus what it confirmed in the last commit interval, the worker what it processed
    # since Faust's last commit plus the batches in hand (one settling, IN_FLIGHT prepared, one being
    # prepared). The sum stays below the expected jobs, so a replay of the whole stream would fail.
    bound = PREFETCH + 2 * SINK_WINDOW + (IN_FLIGHT + 2) * BATCH_SIZE
    assert v.duplicates <= bound, f"{v.duplicates} duplicates exceed {bound}; {result.notes}"
    assert result.exited == {}, f"processes ended on their own: {result.exited}"
    assert v.expected_jobs > 3000
