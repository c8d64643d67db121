"""The wire format: golden payloads, the closed union, subjects derived from types."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from shared.events import (
    CATALOGUE,
    DOMAIN_EVENTS,
    LEGACY,
    UNRECORDED_MOVE,
    UPCASTERS,
    DeadLettered,
    Event,
    EventDecodeError,
    LlmUsage,
    ProposalCreated,
    ProposalRejected,
    TrainSucceeded,
    decode,
    dlq_subject,
    encode,
    subject_of,
    upcast,
)
from tests.shared.samples import LEGACY_SAMPLES, SAMPLES

GOLDEN = Path(__file__).parent.parent / "golden"


def test_every_type_has_a_sample() -> None:
    assert {type(sample) for sample in SAMPLES} == set(CATALOGUE)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: type(s).type_tag())
def test_golden_payload(sample: msgspec.Struct) -> None:
    path = GOLDEN / f"{type(sample).type_tag()}.json"
    assert encode(sample) == path.read_bytes(), "the wire format changed: add a new version instead"
    assert decode(path.read_bytes()) == sample


@pytest.mark.parametrize("legacy", LEGACY_SAMPLES, ids=lambda s: type(s).type_tag())
def test_a_legacy_golden_payload_decodes_into_the_current_type(legacy: Event) -> None:
    golden = (GOLDEN / f"{type(legacy).type_tag()}.json").read_bytes()
    assert encode(legacy) == golden, "a legacy payload never changes"
    current = decode(golden)
    assert type(current) in CATALOGUE and type(current).event_name() == type(legacy).event_name()
    assert current == upcast(legacy)


def test_older_proposals_become_current_with_no_profile_or_move() -> None:
    current = next(s for s in SAMPLES if isinstance(s, ProposalCreated))
    v1 = decode((GOLDEN / "proposal.created.v1.json").read_bytes())
    assert v1 == msgspec.structs.replace(current, profile="", move=UNRECORDED_MOVE)
    v2 = decode((GOLDEN / "proposal.created.v2.json").read_bytes())
    assert v2 == msgspec.structs.replace(current, move=UNRECORDED_MOVE)


def test_a_rejection_names_its_move_compatibly() -> None:
    without = decode((GOLDEN / "proposal.rejected.v1.json").read_bytes())
    assert isinstance(without, ProposalRejected) and without.move == UNRECORDED_MOVE
    with_move = msgspec.structs.replace(without, move="output-gate")
    assert decode(encode(with_move)) == with_move


def test_every_legacy_type_has_an_upcaster_and_no_current_type_has_one() -> None:
    assert set(LEGACY) == set(UPCASTERS) and not set(LEGACY) & set(CATALOGUE)
    assert {type(s) for s in LEGACY_SAMPLES} == set(LEGACY)


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
