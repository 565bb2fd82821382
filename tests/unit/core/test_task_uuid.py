"""Job guids: task_uuid spells a taskId exactly as slugid's decode does, or refuses it alike."""

from __future__ import annotations

import slugid
from hypothesis import given
from hypothesis import strategies as st

from streams.core.pulse_job import task_uuid

SLUG_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _decoded(task_id: str) -> str | type[ValueError]:
    try:
        return str(slugid.decode(task_id))
    except ValueError:
        return ValueError


def _ours(task_id: str) -> str | type[ValueError]:
    try:
        return task_uuid.__wrapped__(task_id)
    except ValueError:
        return ValueError


def test_real_slugids():
    for task_id in [slugid.nice() for _ in range(200)] + [slugid.v4() for _ in range(200)]:
        assert task_uuid(task_id) == str(slugid.decode(task_id))


@given(st.one_of(st.text(SLUG_ALPHABET, min_size=22, max_size=22), st.text(SLUG_ALPHABET + "+/=", max_size=30),
                 st.text(max_size=30)))
def test_any_text_decodes_or_fails_as_slugid_does(task_id):
    assert _ours(task_id) == _decoded(task_id)
