"""The end-to-end benchmark's lean AMQP harness, its load schedule and samples, and the pictures of bench.json."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from pamqp import body as amqp_body
from pamqp import commands
from pamqp import frame as amqp_frame
from pamqp import header as amqp_header

from benchmarks.bench_e2e import downsample, schedule
from benchmarks.lean_amqp import LeanObserver, LeanPublisher, encode_publish, job_key_of
from benchmarks.run import compact_json


def test_encode_publish_gives_the_frames_pamqp_reads_back() -> None:
    body = orjson.dumps({"status": {"taskId": "x"}}) * 10
    data = encode_publish("exchange/x/task-pending", "primary.key", body, {"CC": ["route.tc-treeherder.a"]},
                          frame_max=64)  # a tiny frame size: the body spans several frames
    frames = []
    while data:
        consumed, channel, value = amqp_frame.unmarshal(data)
        frames.append((channel, value))
        data = data[consumed:]
    publish, header = frames[0][1], frames[1][1]
    assert isinstance(publish, commands.Basic.Publish)
    assert (publish.exchange, publish.routing_key) == ("exchange/x/task-pending", "primary.key")
    assert header.body_size == len(body)
    assert header.properties.delivery_mode == 2
    assert header.properties.headers == {"CC": ["route.tc-treeherder.a"]}
    assert b"".join(value.value for _, value in frames[2:]) == body
    assert {channel for channel, _ in frames} == {1}


def _delivery(body: bytes) -> bytes:
    """A Basic.Deliver with its header and the body in 50-byte frames, as the broker writes them."""
    deliver = commands.Basic.Deliver(consumer_tag="c", delivery_tag=1, exchange="jobs", routing_key="tc.x")
    return (amqp_frame.marshal(deliver, 1)
            + amqp_frame.marshal(amqp_header.ContentHeader(0, len(body), commands.Basic.Properties()), 1)
            + b"".join(amqp_frame.marshal(amqp_body.ContentBody(body[i:i + 50]), 1) for i in range(0, len(body), 50)))


@pytest.mark.parametrize("chunk", [1, 7, 10_000])
def test_observer_keeps_every_body_whatever_the_socket_chunks(chunk: int) -> None:
    bodies = [orjson.dumps({"taskId": f"t{i}/0", "state": "pending", "pad": "x" * (i * 40)}) for i in range(5)]
    stream = b"".join(_delivery(body) for body in bodies)
    observer = LeanObserver()
    for start in range(0, len(stream), chunk):
        observer.data_received(stream[start:start + chunk])
    assert [body for _, body in observer.arrived] == bodies
    assert [job_key_of(body) for _, body in observer.arrived] == [(f"t{i}/0", "pending") for i in range(5)]


def test_publisher_counts_single_and_multiple_confirms() -> None:
    publisher = LeanPublisher()
    publisher.published = 10

    def ack(tag: int, multiple: bool) -> bytes:
        return amqp_frame.marshal(commands.Basic.Ack(delivery_tag=tag, multiple=multiple), 1)

    publisher.data_received(ack(3, False) + ack(2, True))
    assert publisher.confirmed == 3
    publisher.data_received(ack(5, False) + ack(4, False))
    assert publisher.confirmed == 5
    publisher.data_received(ack(10, True))
    assert publisher.confirmed == 10
    assert publisher.failure is None


def test_job_key_reads_the_top_level_fields_and_falls_back_to_a_parse() -> None:
    job = {"owner": "a@b", "taskId": "abc/1", "display": {"jobSymbol": '"state":"x"'}, "state": "running"}
    assert job_key_of(orjson.dumps(job)) == ("abc/1", "running")
    assert job_key_of(b'{"taskId": "abc/1", "state": "completed"}') == ("abc/1", "completed")


def test_schedule_paces_each_phase_and_gives_the_last_the_rest() -> None:
    due, phase_of = schedule((("steady", 2.0, 2.0), ("burst", 1.0, 10.0), ("after", 2.0, 2.0)), 20)
    assert phase_of == [0] * 4 + [1] * 10 + [2] * 6
    assert due[:5] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert due[13] == pytest.approx(2.9)
    assert due[14:16] == [3.0, 3.5]
    assert due == sorted(due)


def test_downsample_keeps_every_nth_in_publish_order() -> None:
    samples = [(i / 10, i / 1000) for i in range(100)][::-1]
    kept = downsample(samples, 10)
    assert len(kept) == 10
    assert kept[0] == [0.0, 0.0] and kept[1] == [1.0, 10.0]


def test_compact_json_puts_arrays_of_numbers_on_one_line() -> None:
    results = {"e2e": {"samples": [[0.0, 1.5], [0.1, 2.5]], "cpu": {"a": 1}}, "load": [0.5, 0.25]}
    text = compact_json(results)
    assert json.loads(text) == results
    assert '"samples": [[0.0,1.5],[0.1,2.5]]' in text
    assert '"load": [0.5, 0.25]' in text


def test_plots_draw_what_the_results_hold(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from benchmarks.plots import draw

    run = {"samples": [[0.0, 20.0], [0.5, 30.0]], "cpu_us_per_event": {"worker-0": 500, "benchmark": 40},
           "latency_ms": {"p50": 20.0, "p99": 30.0}}
    results = {
        "machine": {"nproc": 2, "load_average_at_start": [0.5, 0.5, 0.5]}, "quick": True, "started": "now",
        "e2e": {"latency": {"100": {"runs": [run], "p50_ms": 20.0, "p99_ms": 30.0}}, "sustained": [run]},
        "profile": {"samples": [[0.0, 20.0], [1.0, 300.0], [2.0, 20.0]], "burst_clear_s": 0.5,
                    "cpu_us_per_event": {"sink": 300},
                    "phases": [{"name": "steady", "rate": 15, "from_s": 0, "to_s": 0.9,
                                "latency_ms": {"p50": 20, "p99": 20, "max": 20}},
                               {"name": "burst", "rate": 330, "from_s": 1, "to_s": 1.9,
                                "latency_ms": {"p50": 300, "p99": 300, "max": 300}}],
                    "hops_ms": [{"phase": "steady", "pulse_to_source": {"p50": 1}, "source_to_worker_out": {"p50": 10},
                                 "worker_out_to_observer": {"p50": 5}}]},
        "sink": {"stage_median": 3000, "raw_median": 3600},
    }
    written = draw(results, tmp_path)
    assert sorted(path.name for path in written) == ["cpu.png", "e2e-latency.png", "profile.png", "stages.png"]
    assert all(path.stat().st_size > 1000 for path in written)
