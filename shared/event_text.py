"""One readable line per event: what ``asiarch events tail``, ``campaign start --wait`` in a log and the web UI's
live feed show."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import singledispatch

from shared.events import (
    AnalysisCreated,
    CampaignStarted,
    CampaignStopped,
    DeadLettered,
    DebugGaveUp,
    DebugPatched,
    Event,
    EventDecodeError,
    FitnessComputed,
    JudgeScored,
    MoveLearned,
    ProposalCreated,
    ProposalRejected,
    ReplicateRequested,
    ReplicateTrained,
    TrainFailed,
    TrainStarted,
    TrainSucceeded,
    TrajectoryRecorded,
    decode,
)


@singledispatch
def describe(event: Event) -> str:
    return ""


@describe.register
def _(event: CampaignStarted) -> str:
    return f"profile={event.profile} budget={event.budget.experiments} model={event.llm_model}"


@describe.register
def _(event: CampaignStopped) -> str:
    return event.reason


@describe.register
def _(event: ProposalCreated) -> str:
    return f"{event.name!r} parents={','.join(event.parent_ids) or '-'} move={event.move or '-'}"


@describe.register
def _(event: ProposalRejected) -> str:
    return f"{event.reason}: {event.detail[:80]}"


@describe.register
def _(event: MoveLearned) -> str:
    return f"{event.move_id} {event.title!r} from {event.provenance}"


@describe.register
def _(event: TrajectoryRecorded) -> str:
    return f"{event.agent}: {len(event.turns)} requests beside {event.outcome}"


@describe.register
def _(event: TrainStarted) -> str:
    return f"attempt {event.attempt} on {event.worker_host}/{event.device}"


@describe.register
def _(event: TrainSucceeded) -> str:
    return f"val_loss={event.val_loss:.4f} params={event.params:,} {event.tokens_per_s:,.0f} tok/s"


@describe.register
def _(event: TrainFailed) -> str:
    return f"attempt {event.attempt} {event.error_kind}: {event.message[:80]}"


@describe.register
def _(event: DebugPatched) -> str:
    return f"attempt {event.attempt}: {event.diagnosis[:80]}"


@describe.register
def _(event: DebugGaveUp) -> str:
    return f"after {event.attempts} attempts ({event.last_error_kind})"


@describe.register
def _(event: AnalysisCreated) -> str:
    return f"gallery={event.gallery_path}"


@describe.register
def _(event: JudgeScored) -> str:
    return f"perf={event.performance} innov={event.innovation} cplx={event.complexity} w={event.weighted:.2f}"


@describe.register
def _(event: FitnessComputed) -> str:
    return f"total={event.total:.3f}"


@describe.register
def _(event: ReplicateRequested) -> str:
    return f"seed {event.seed}: {event.reason}"


@describe.register
def _(event: ReplicateTrained) -> str:
    if not event.succeeded:
        return f"seed {event.seed} {event.error_kind}: {event.message[:80]}"
    return f"seed {event.seed} val_loss={event.val_loss:.4f}" if event.val_loss is not None else f"seed {event.seed}"


@describe.register
def _(event: DeadLettered) -> str:
    return f"from {event.consumer} after {event.deliveries}: {event.error.splitlines()[-1][:80] if event.error else ''}"


@dataclass(frozen=True)
class EventLine:
    """One stored event as a line: its fields apart, for a table, and together, for a log."""

    seq: int
    subject: str
    occurred_at: dt.datetime | None
    name: str  # the event's name, e.g. train.failed; "?" when the payload does not decode
    campaign_id: str
    experiment_id: str
    text: str

    @classmethod
    def of(cls, seq: int, subject: str, data: bytes) -> EventLine:
        try:
            event = decode(data)
        except EventDecodeError as exc:
            return cls(seq, subject, None, "?", "", "", f"undecodable: {exc}")
        return cls(seq, subject, event.occurred_at, type(event).event_name(), event.campaign_id,
                   event.experiment_id, describe(event))

    def line(self) -> str:
        if self.occurred_at is None:
            return f"{self.seq:>7}  {'?':<8}  {self.subject:<28}  {self.text}"
        when = self.occurred_at.strftime("%H:%M:%S")
        return f"{self.seq:>7}  {when:<8}  {self.name:<20}  {self.experiment_id[:12] or '-':<12}  {self.text}"
