"""The wire format: golden payloads, the closed union, subjects derived from types."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from shared.events import (
    CATALOGUE,
    DOMAIN_EVENTS,
    DeadLettered,
    EventDecodeError,
    LlmUsage,
    ProposalCreated,
    ProposalRejected,
    TrainSucceeded,
    decode,
    dlq_subject,
    encode,
    subject_of,
)
from tests.shared.samples import SAMPLES

GOLDEN = Path(__file__).parent.parent / "golden"


def test_every_type_has_a_sample() -> None:
    assert {type(sample) for sample in SAMPLES} == set(CATALOGUE)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: type(s).type_tag())
def test_golden_payload(sample: msgspec.Struct) -> None:
    path = GOLDEN / f"{type(sample).type_tag()}.json"
    if os.environ.get("ASIARCH_WRITE_GOLDEN") == "1":
        path.write_bytes(encode(sample))
    assert encode(sample) == path.read_bytes(), "the wire format changed: add a new version instead"
    assert decode(path.read_bytes()) == sample


def test_a_rejection_carries_its_llm_usage_compatibly() -> None:
    golden = (GOLDEN / "proposal.rejected.v1.json").read_bytes()
    without = decode(golden)
    assert isinstance(without, ProposalRejected) and without.llm is None
    usage = LlmUsage(model="m", prompt_tokens=900, completion_tokens=300, latency_s=12.5)
    with_usage = msgspec.structs.replace(without, llm=usage)
    assert decode(encode(with_usage)) == with_usage
    # A reader built before the field existed still decodes the new payload (unknown fields are ignored).
    assert msgspec.json.decode(encode(with_usage))["llm"]["completion_tokens"] == 300


def test_a_training_report_carries_its_behaviour_compatibly() -> None:
    without = decode((GOLDEN / "train.succeeded.v1.json").read_bytes())
    assert isinstance(without, TrainSucceeded) and without.behaviour == ()
    with_behaviour = msgspec.structs.replace(without, behaviour=(0.25, -1.5))
    assert decode(encode(with_behaviour)) == with_behaviour
    assert msgspec.json.decode(encode(with_behaviour))["behaviour"] == [0.25, -1.5]


def test_tags_are_versioned_and_unique() -> None:
    tags = [t.type_tag() for t in CATALOGUE]
    assert len(set(tags)) == len(tags)
    assert all(tag.rsplit(".v", 1)[1].isdigit() for tag in tags)


def test_subjects_derive_from_tags() -> None:
    assert ProposalCreated.subject() == "asiarch.proposal.created"
    assert len({t.subject() for t in DOMAIN_EVENTS}) == len(DOMAIN_EVENTS)
    letter = next(s for s in SAMPLES if isinstance(s, DeadLettered))
    assert subject_of(letter) == dlq_subject("asiarch.train.failed") == "asiarch.dlq.train.failed"


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"{}", b'{"type": "unknown.v1"}', b'{"type": "proposal.created.v1", "event_id": 3}'],
)
def test_malformed_payloads_raise_one_error_type(payload: bytes) -> None:
    with pytest.raises(EventDecodeError):
        decode(payload)


def test_events_are_frozen() -> None:
    with pytest.raises(AttributeError):
        SAMPLES[0].event_id = "x"  # type: ignore[misc]
