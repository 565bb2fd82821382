"""The state guard: no run moves backwards on a late delivery, and no job is lost when the log is read again."""

from __future__ import annotations

from streams.core.state_guard import GuardEntry, admit, recovered


def job(state: str) -> dict[str, str]:
    return {"taskId": "abc/0", "state": state}


def replay(states_at: list[tuple[str, int]], entry: GuardEntry | None = None) -> tuple[list[str], GuardEntry | None]:
    """Run (state, offset) pairs through the guard; the states it lets out, and the entry it ends with."""
    out = []
    for state, offset in states_at:
        admitted = admit(entry, job(state), offset)
        if admitted is not None:
            out.append(state)
            entry = admitted
    return out, entry


def test_a_run_in_log_order_goes_out_whole():
    out, entry = replay([("pending", 10), ("running", 11), ("completed", 12)])
    assert out == ["pending", "running", "completed"]
    assert entry == GuardEntry(rank=3, emitted=0b1110, offset=12)


def test_a_late_pulse_delivery_is_held_back():
    # Pulse delivered running, then completed, then the pending it had sent first: later in the log.
    out, _ = replay([("running", 10), ("completed", 11), ("pending", 12)])
    assert out == ["running", "completed"]


def test_reading_the_log_again_resends_only_the_furthest_state():
    _, entry = replay([("pending", 10), ("running", 11), ("completed", 12)])
    out, _ = replay([("pending", 10), ("running", 11), ("completed", 12)], entry)
    assert out == ["completed"], "a redelivery of the final state is an update; earlier ones stay held back"


def test_a_job_an_earlier_pass_missed_goes_out_when_the_log_is_read_again():
    # The first pass never saw offset 10 (Faust skipped it); the next owner reads 10-12 again.
    _, entry = replay([("running", 11), ("completed", 12)])
    out, entry = replay([("pending", 10), ("running", 11), ("completed", 12)], entry)
    assert out == ["pending", "completed"]
    assert entry == GuardEntry(rank=3, emitted=0b1110, offset=12)


def test_recovered_names_a_job_admitted_below_the_furthest_state():
    entry = GuardEntry(rank=3, emitted=0b1100, offset=12)
    admitted = admit(entry, job("pending"), 10)
    assert admitted is not None and recovered(entry, admitted, job("pending"))
    assert not recovered(None, GuardEntry(1, 0b10, 10), job("pending"))
    assert not recovered(entry, GuardEntry(3, 0b1100, 13), job("completed"))


def test_entries_round_trip_and_bare_ranks_from_older_workers_hold_back_everything_below():
    entry = GuardEntry(rank=2, emitted=0b101, offset=42)
    assert GuardEntry.decode(entry.encode()) == entry
    old = GuardEntry.decode(b"2")
    assert old.emitted == 0b111
    assert admit(old, job("pending"), 0) is None, "without offsets, every lower state counts as emitted"
    assert admit(old, job("running"), 0) is not None
