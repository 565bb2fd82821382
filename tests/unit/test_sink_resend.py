"""What the sink publishes again after a failed Pulse session: nothing a confirm vouches for."""

from __future__ import annotations

from aiokafka import TopicPartition

from connectors.pulse_sink import Resend

TP = TopicPartition("jobs", 0)


def job(run: str, state: str) -> dict[str, str]:
    return {"taskId": f"{run}/0", "state": state}


def test_a_confirmed_record_read_again_is_not_published_again() -> None:
    resend = Resend()
    resend.confirmed(TP, 11, job("a", "completed"))
    resend.failed()
    assert not resend.vouched(TP, 10, job("b", "pending"))  # unconfirmed: published again
    assert resend.vouched(TP, 11, job("a", "completed"))


def test_an_unconfirmed_older_state_before_a_confirmed_later_one_is_not_published_again() -> None:
    """completed confirmed, then pending/running read again: sending them would take the run back."""
    resend = Resend()
    resend.confirmed(TP, 14, job("a", "completed"))
    resend.failed()
    assert resend.vouched(TP, 12, job("a", "pending"))
    assert resend.vouched(TP, 13, job("a", "running"))
    assert not resend.vouched(TP, 13, job("b", "running"))  # another run: nothing vouches for it


def test_a_nacked_record_is_published_again_whatever_came_after_it() -> None:
    resend = Resend()
    resend.nacked(TP, 12)
    resend.confirmed(TP, 14, job("a", "completed"))
    resend.failed()
    assert not resend.vouched(TP, 12, job("a", "pending"))


def test_a_later_record_with_an_older_state_is_published() -> None:
    """Only records before the confirmed one are vouched for: a later one is new (a replay, say)."""
    resend = Resend()
    resend.confirmed(TP, 14, job("a", "completed"))
    resend.failed()
    assert not resend.vouched(TP, 15, job("a", "pending"))
    assert not resend.vouched(TP, 14, job("a", "completed"))  # past the replay's end: forgotten


def test_confirms_below_a_commit_are_forgotten_and_a_second_failure_keeps_the_first() -> None:
    resend = Resend()
    resend.confirmed(TP, 5, job("a", "pending"))
    resend.confirmed(TP, 9, job("b", "completed"))
    resend.committed({TP: 6})
    resend.failed()
    resend.confirmed(TP, 7, job("c", "running"))
    resend.failed()  # failed again while reading again
    assert not resend.vouched(TP, 5, job("a", "pending"))
    assert resend.vouched(TP, 7, job("c", "running"))
    assert resend.vouched(TP, 8, job("b", "running"))
    assert resend.vouched(TP, 9, job("b", "completed"))
