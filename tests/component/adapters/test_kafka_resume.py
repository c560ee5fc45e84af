"""What a Kafka input partition resumes from, whichever version of the source saved its state."""

from __future__ import annotations

import pytest

from adapters.kafka_io import KafkaResume, resume_of
from ledger.errors import SourceError

pytestmark = pytest.mark.component


def test_no_saved_state_means_no_resume() -> None:
    assert resume_of(None) is None


def test_the_current_state_resumes_as_saved() -> None:
    saved = KafkaResume(offset=42, clock=1_764_000_000_000)
    assert resume_of(saved) is saved


def test_an_offset_saved_by_an_older_version_resumes_there_on_the_wall_clock() -> None:
    assert resume_of(1_234) == KafkaResume(offset=1_234, clock=None)


@pytest.mark.parametrize("saved", [True, "17", (3, 4), {"offset": 3}])
def test_unreadable_state_is_refused_with_what_to_do(saved: object) -> None:
    with pytest.raises(SourceError, match=r"cannot read: restart with --reset"):
        resume_of(saved)
