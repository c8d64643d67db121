"""Agent tasks' conversations kept beside their events, and exported whole."""

from __future__ import annotations

from shared.bus import Delivery
from shared.events import (
    DebugPatched,
    Event,
    LlmUsage,
    ProposalRejected,
    TrainFailed,
    TrajectoryRecorded,
    caused_by,
    decode,
    encode,
)
from shared.llm import Exchange
from shared.trajectory import export_rows, recorded, trajectory, transcripts, turns_of
from tests.agents.conftest import scripted
from tests.shared.samples import envelope

SYSTEM = {"role": "system", "content": "You fix mixers."}
ASK = {"role": "user", "content": "Fix this traceback."}
USAGE = LlmUsage(model="scripted", prompt_tokens=10, completion_tokens=5, latency_s=0.5)


def conversation() -> list[Exchange]:
    """A JSON idea, a code turn that continues it, then a fresh request (another conversation)."""
    first = (SYSTEM, ASK)
    second = (*first, {"role": "assistant", "content": '{"idea": 1}'}, {"role": "user", "content": "Code now."})
    fresh = ({"role": "user", "content": "Something else."},)
    return [Exchange(first, '{"idea": 1}', True), Exchange(second, "```python\nx\n```", False),
            Exchange(fresh, "ok", False)]


def test_a_conversation_keeps_only_what_each_request_adds_and_comes_back_whole() -> None:
    exchanges = conversation()
    turns, truncated = turns_of(exchanges)
    assert not truncated and [t.shared for t in turns] == [0, 3, 0]
    assert [m.content for m in turns[1].messages] == ["Code now."]
    assert transcripts(turns) == [(list(e.messages), e.reply, e.json) for e in exchanges]


def test_turns_past_the_size_limit_are_left_out_and_said_so() -> None:
    turns, truncated = turns_of(conversation(), limit=60)
    assert truncated and len(turns) == 1


def failed() -> TrainFailed:
    return TrainFailed(**envelope(40, "exp-9"), attempt=1, error_kind="shape", message="bad shape")


async def test_a_recorded_handler_publishes_its_conversation_beside_its_event() -> None:
    llm, _ = scripted({"diagnosis": "transpose"}, "fixed code")

    async def patch(event: Event, delivery: Delivery) -> list[Event]:
        await llm.complete_json([SYSTEM, ASK], {"type": "object"})
        await llm.complete_text([SYSTEM, ASK, {"role": "user", "content": "The code."}])
        return [DebugPatched(**caused_by(event, "debugger"), attempt=2, diagnosis="transpose", code="c", diff="d",
                             llm=USAGE)]

    outputs = await recorded("debugger", patch)(failed(), None)  # type: ignore[arg-type]
    patched, kept = outputs
    assert isinstance(kept, TrajectoryRecorded) and kept.of_event == patched.event_id
    assert (kept.agent, kept.producer, kept.outcome, kept.model) == ("debugger", "debugger", "debug.patched.v1",
                                                                     "scripted")
    assert (kept.campaign_id, kept.experiment_id) == (patched.campaign_id, "exp-9")
    assert [t.json for t in kept.turns] == [True, False] and kept.turns[1].reply == "fixed code"
    assert decode(encode(kept)) == kept
    # The id derives from the task's event: the same task redone after a crash is recorded once.
    assert trajectory("debugger", outputs[:1], conversation())[0].event_id == kept.event_id


def test_no_trajectory_without_a_task_event_or_without_a_request() -> None:
    rejected = ProposalRejected(**envelope(41, "exp-8"), reason="syntax", detail="x")
    assert trajectory("researcher", [rejected], conversation()) == []  # no LLM usage: not an LLM task
    with_llm = ProposalRejected(**envelope(42, "exp-8"), reason="syntax", detail="x", llm=USAGE)
    assert trajectory("researcher", [with_llm], []) == []
    kept = trajectory("researcher", [with_llm], conversation())[0]
    assert (kept.outcome, kept.detail) == ("proposal.rejected.v1", "syntax")


def test_the_export_is_one_row_per_request_with_the_whole_conversation() -> None:
    with_llm = ProposalRejected(**envelope(42, "exp-8"), reason="syntax", detail="x", llm=USAGE)
    kept = trajectory("researcher", [with_llm], conversation())
    rows = list(export_rows([with_llm, *kept], campaign_id="camp-1", agent="researcher"))
    assert [r["turn"] for r in rows] == [1, 2, 3] and rows[0]["detail"] == "syntax"
    assert rows[1]["messages"][-1] == {"role": "assistant", "content": "```python\nx\n```"}
    assert rows[1]["messages"][:4] == [SYSTEM, ASK, {"role": "assistant", "content": '{"idea": 1}'},
                                       {"role": "user", "content": "Code now."}]
    assert list(export_rows(kept, campaign_id="another")) == [] and list(export_rows(kept, agent="judge")) == []
