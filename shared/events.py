"""The event catalogue: every message on the bus is one of these types.

Each event is a frozen, keyword-only ``msgspec.Struct`` tagged ``<name>.v<N>``. The subject an event travels on is
derived from its tag (``proposal.created.v2`` -> ``asiarch.proposal.created``) and the stream's subject filter from
the same prefix, so no subject string is spelled anywhere else. Evolve additively (new fields need defaults, and
``omit_defaults`` keeps older payloads byte-identical); a breaking change is a new ``vN+1`` type, the old type kept
under ``legacy`` names with a pure upcaster in ``UPCASTERS``: ``decode`` returns only current types, so no consumer
ever sees an old version. A golden payload per version (tests/golden) pins the wire format.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any, Literal, Union

import msgspec

STREAM_NAME = "ASIARCH"
SUBJECT_PREFIX = "asiarch"
STREAM_SUBJECTS = [f"{SUBJECT_PREFIX}.>"]
DLQ_PREFIX = f"{SUBJECT_PREFIX}.dlq"

# Namespace for ids derived from a cause, so a re-run handler emits the same ids and JetStream drops the repeats.
_DERIVED_ID_NAMESPACE = uuid.UUID("5b0c3a51-2f3e-4d8e-9a55-6a1f1c1f7e01")


def new_event_id() -> str:
    return uuid.uuid4().hex


def derived_event_id(cause_id: str, producer: str, index: int) -> str:
    """A stable id for the ``index``-th event that ``producer`` emits in reaction to event ``cause_id``."""
    return uuid.uuid5(_DERIVED_ID_NAMESPACE, f"{cause_id}/{producer}/{index}").hex


def campaign_stopped_id(campaign_id: str) -> str:
    """One id for a campaign's stop, whoever sends it and however often: the server keeps the first."""
    return derived_event_id(campaign_id, "campaign.stopped", 0)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """The common envelope. Subclasses set ``tag`` to ``<name>.v<N>``."""

    event_id: str
    occurred_at: dt.datetime
    producer: str
    campaign_id: str
    experiment_id: str = ""
    correlation_id: str = ""
    causation_id: str = ""

    @classmethod
    def type_tag(cls) -> str:
        return str(cls.__struct_config__.tag)

    @classmethod
    def event_name(cls) -> str:
        """``proposal.created`` for the tag ``proposal.created.v1``."""
        return cls.type_tag().rsplit(".v", 1)[0]

    @classmethod
    def subject(cls) -> str:
        return f"{SUBJECT_PREFIX}.{cls.event_name()}"


# --- payload parts ------------------------------------------------------------------------------------------------


class Budget(msgspec.Struct, frozen=True, kw_only=True):
    experiments: int
    gpu_hours: float = 0.0
    cpu_hours: float = 0.0


class LlmUsage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    # Of the prompt tokens, those a server's prompt cache had already evaluated (0 where none tells). Defaults are
    # omitted on the wire, so a usage from before this field encodes as it did.
    cached_prompt_tokens: int = 0


class CurvePoint(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    step: int
    tokens: int
    loss: float


class ReportSection(msgspec.Struct, frozen=True, kw_only=True):
    title: str
    body: str


# The analysis section that says what to try next: the researcher learns moves from it.
NEXT_STEPS_SECTION = "What to try next"


# --- the catalogue -------------------------------------------------------------------------------------------------


class CampaignStartedV1(Event, frozen=True, kw_only=True, tag="campaign.started.v1"):
    """Legacy: before a campaign could run without the researcher proposing."""

    profile: str
    budget: Budget
    llm_model: str
    seed: int = 0


class CampaignStartedV2(Event, frozen=True, kw_only=True, tag="campaign.started.v2"):
    """Legacy: before a campaign could be a control arm."""

    profile: str
    budget: Budget
    llm_model: str
    seed: int = 0
    research: bool = True


class CampaignStarted(Event, frozen=True, kw_only=True, tag="campaign.started.v3"):
    profile: str
    budget: Budget
    llm_model: str
    seed: int = 0
    # False: the researcher proposes nothing for it; only mixers handed in by `asiarch submit` run.
    research: bool = True
    # The control arm: the researcher draws built-in moves uniformly and shows the LLM no analyses and no
    # cognition, and learns no move, so a campaign beside it shows what memory and selection add.
    control: bool = False


class CampaignStopped(Event, frozen=True, kw_only=True, tag="campaign.stopped.v1"):
    reason: str


class ProposalCreatedV1(Event, frozen=True, kw_only=True, tag="proposal.created.v1"):
    """Legacy: before proposals named their profile. Decoded only to be upcast to ``ProposalCreated``."""

    name: str
    motivation: str
    code: str
    parent_ids: tuple[str, ...] = ()
    cognition_ids: tuple[str, ...] = ()
    llm: LlmUsage | None = None


class ProposalCreatedV2(Event, frozen=True, kw_only=True, tag="proposal.created.v2"):
    """Legacy: before proposals named the move they apply. Decoded only to be upcast to ``ProposalCreated``."""

    name: str
    motivation: str
    code: str
    profile: str
    parent_ids: tuple[str, ...] = ()
    cognition_ids: tuple[str, ...] = ()
    llm: LlmUsage | None = None


# What a proposal's change is, besides a move of the library: the LLM's own choice (the free mode), a component of a
# reference mixer ported into the parent (recombination), a mixer handed in by `asiarch submit`, a trained mixer
# re-run at another profile (`asiarch promote`: no change), or not recorded (a proposal from before proposals named
# their move). The researcher chooses the first two like moves, by their record; the rest it did not choose.
FREE_MOVE, CROSSOVER_MOVE = "free", "crossover"
SUBMITTED, PROMOTED, UNRECORDED_MOVE = "submitted", "promoted", ""
UNCHOSEN_MOVES: frozenset[str] = frozenset({SUBMITTED, PROMOTED, UNRECORDED_MOVE})
NOT_LIBRARY_MOVES: frozenset[str] = UNCHOSEN_MOVES | {FREE_MOVE, CROSSOVER_MOVE}
NO_ISLAND = -1


class ProposalCreated(Event, frozen=True, kw_only=True, tag="proposal.created.v3"):
    name: str
    motivation: str
    code: str
    # The profile to train at, so the engineer needs no view of campaigns. Empty only in an upcast v1 proposal,
    # which trains at the engineer's default profile.
    profile: str
    # The id of the library move the change applies (a built-in one, or one a ``move.learned`` added), or one of
    # one of NOT_LIBRARY_MOVES. Memory keeps each move's record by it.
    move: str = UNRECORDED_MOVE
    # With island sampling, the island of the population it joins (parents are drawn within it; a migrant's parent
    # came from another); -1 without.
    island: int = NO_ISLAND
    parent_ids: tuple[str, ...] = ()
    cognition_ids: tuple[str, ...] = ()
    llm: LlmUsage | None = None


RejectionReason = Literal["duplicate", "novelty", "causality", "complexity", "params", "syntax", "contract"]
REJECTION_REASONS: tuple[str, ...] = RejectionReason.__args__  # type: ignore[attr-defined]


class ProposalRejected(Event, frozen=True, kw_only=True, tag="proposal.rejected.v1", omit_defaults=True):
    reason: RejectionReason
    detail: str
    # Added compatibly: omitted when absent, so payloads without it stay byte-identical and older readers, which
    # ignore unknown fields, still decode the ones that carry it. The LLM work a rejection cost is spend too.
    llm: LlmUsage | None = None
    # Added compatibly, like llm: the draft the researcher rejected, so what the LLM wrote can be read back.
    name: str = ""
    motivation: str = ""
    code: str = ""
    parent_ids: tuple[str, ...] = ()
    # Added compatibly, like llm: the move the rejected draft applied (see ``ProposalCreated.move``), so a move
    # that yields rejected drafts has that on its record.
    move: str = ""


class MoveStep(msgspec.Struct, frozen=True, kw_only=True):
    """One step of a move: the function to rewrite (``__init__``, ``forward``, or a regex found in the function's
    source), where in it the change goes (see ``services/researcher/moves.py``) and what to write."""

    site: str
    anchor: str
    instruction: str


class MoveLearned(Event, frozen=True, kw_only=True, tag="move.learned.v1"):
    """A move added to the library during a campaign. Published once a proposal made with it passed the checks
    and the behaviour probe (``experiment_id`` is that proposal), so every move in the log has been used."""

    move_id: str
    title: str
    rationale: str
    # Where it came from: "cognition:<entry id>" (an entry's design insight and guidance) or "analysis:<experiment
    # id>" (what that run's analysis said to try next).
    provenance: str
    steps: tuple[MoveStep, ...]
    cognition_ids: tuple[str, ...] = ()
    requires: str = ""  # a regex a parent must match for it to apply ("" any parent)
    llm_model: str = ""


class ChatMessage(msgspec.Struct, frozen=True, kw_only=True):
    role: str
    content: str


class ChatTurn(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One request of an agent task and its reply. Requests of one conversation repeat the earlier turns, so a turn
    keeps only what is new: ``shared`` leading messages are those of the previous request followed by its reply
    (0 for a fresh conversation), ``messages`` the rest."""

    shared: int
    messages: tuple[ChatMessage, ...]
    reply: str
    json: bool = False  # the reply was asked for under a JSON schema


class TrajectoryRecorded(Event, frozen=True, kw_only=True, tag="trajectory.recorded.v1", omit_defaults=True):
    """An agent task's conversation with the LLM, beside the event the task produced (``of_event``): every request
    and reply, and what was done with them, for prompt work or fine-tuning a local model."""

    agent: str
    of_event: str
    outcome: str  # the produced event's tag, e.g. proposal.rejected.v1
    detail: str = ""  # what the outcome says in a word: a rejection's reason, an error kind
    model: str = ""
    turns: tuple[ChatTurn, ...] = ()
    truncated: bool = False  # turns past the size a message may have were left out


class TrainStarted(Event, frozen=True, kw_only=True, tag="train.started.v1"):
    attempt: int
    worker_host: str
    device: str
    profile: str = ""


class TrainSucceeded(Event, frozen=True, kw_only=True, tag="train.succeeded.v1", omit_defaults=True):
    attempt: int
    profile: str
    curve: tuple[CurvePoint, ...]
    train_loss: float
    val_loss: float
    benchmarks: dict[str, float]
    params: int
    tokens: int
    tokens_per_s: float
    device: str
    gpu_seconds: float
    cpu_core_seconds: float
    checkpoint_path: str
    worker_host: str = ""
    # Added compatibly (omitted when empty): the checks' behaviour signature, outputs on a fixed probe. Later
    # candidates that compute the same are rejected as duplicates before they train.
    behaviour: tuple[float, ...] = ()
    # Added compatibly: "fp32" or "bf16" (autocast); empty in events from before it was recorded (fp32 on a CPU).
    precision: str = ""


ErrorKind = Literal[
    "syntax",
    "contract",
    "causality",
    "complexity",
    "params",
    "batch",
    "efficiency",
    "nan",
    "timeout",
    "memory",
    "runtime",
]
ERROR_KINDS: tuple[str, ...] = ErrorKind.__args__  # type: ignore[attr-defined]
# What a check can conclude: a failure to debug, or a duplicate (a rejection: the idea is already measured).
CHECK_FAILURE_KINDS: frozenset[str] = frozenset((*ERROR_KINDS, "duplicate"))


class TrainFailed(Event, frozen=True, kw_only=True, tag="train.failed.v1", omit_defaults=True):
    attempt: int
    error_kind: ErrorKind
    message: str
    traceback: str = ""
    log_tail: str = ""
    code: str = ""
    device: str = ""
    device_seconds: float = 0.0
    worker_host: str = ""
    profile: str = ""  # added compatibly: the debugger's patch trains at the same profile


class DebugPatched(Event, frozen=True, kw_only=True, tag="debug.patched.v1", omit_defaults=True):
    attempt: int
    diagnosis: str
    code: str
    diff: str
    llm: LlmUsage | None = None
    profile: str = ""  # added compatibly, from the failure it fixes; empty: the engineer's default profile


class DebugGaveUp(Event, frozen=True, kw_only=True, tag="debug.gave_up.v1", omit_defaults=True):
    attempts: int
    last_error_kind: str
    last_error: str
    llm: LlmUsage | None = None  # added compatibly, like ProposalRejected.llm: the patches the LLM got wrong


class AnalysisCreatedV1(Event, frozen=True, kw_only=True, tag="analysis.created.v1"):
    """Legacy: before an analysis carried its comparison table as data."""

    sections: tuple[ReportSection, ...]
    compared_with: tuple[str, ...]
    gallery_path: str
    llm: LlmUsage | None = None


class ComparisonRow(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One line of an analysis's comparison table, built in code from the measurements."""

    role: str  # this run, parent, grandparent, sibling, best baseline
    id: str  # an experiment id, or baseline:<name>
    name: str
    val_loss: float | None  # mean over seeds
    val_loss_sd: float | None = None
    seeds: int = 1
    tasks: dict[str, float] = {}  # the tasks that carry signal at the profile
    # How the run compares with this row beyond seed noise: better, worse, within noise; "" for the run itself
    # or where no noise is known.
    run_is: str = ""


class AnalysisCreated(Event, frozen=True, kw_only=True, tag="analysis.created.v2", omit_defaults=True):
    sections: tuple[ReportSection, ...]
    compared_with: tuple[str, ...]
    gallery_path: str
    llm: LlmUsage | None = None
    comparison: tuple[ComparisonRow, ...] = ()
    signal_tasks: tuple[str, ...] = ()
    # Statements of the LLM's report that contradicted the table or the diff even after it was asked once to
    # correct them: removed from the sections, kept here to be read.
    removed_statements: tuple[str, ...] = ()


class JudgeScored(Event, frozen=True, kw_only=True, tag="judge.scored.v1"):
    performance: int
    innovation: int
    complexity: int
    weighted: float
    rationale: str
    llm: LlmUsage | None = None


class FitnessComputed(Event, frozen=True, kw_only=True, tag="fitness.computed.v1"):
    loss_term: float
    benchmark_term: float
    judge_term: float
    total: float


class BaselineMeasuredV1(Event, frozen=True, kw_only=True, tag="baseline.measured.v1"):
    """Legacy: before a baseline's measurement carried its loss curve."""

    profile: str
    mixer: str
    seed: int
    val_loss: float
    benchmarks: dict[str, float]
    tokens: int
    device: str
    params: int = 0
    train_loss: float = 0.0
    fitness_reference: bool = False


class BaselineMeasured(Event, frozen=True, kw_only=True, tag="baseline.measured.v2", omit_defaults=True):
    """One trained seed of a built-in baseline (``asiarch baselines``). Memory projects these into the baselines
    of each profile and, from the fitness reference's seeds, the reference fitness is measured against. The
    curve is what a run's loss plot is drawn against."""

    profile: str
    mixer: str
    seed: int
    val_loss: float
    benchmarks: dict[str, float]
    tokens: int
    device: str
    params: int = 0
    train_loss: float = 0.0
    fitness_reference: bool = False
    curve: tuple[CurvePoint, ...] = ()
    # Added compatibly: "fp32" or "bf16" (autocast); empty in events from before it was recorded (fp32 on a CPU).
    precision: str = ""


class ReplicateRequested(Event, frozen=True, kw_only=True, tag="replicate.requested.v1"):
    """Memory asks for another seed of a run that entered the leaderboard's top k: one seed ranks chance as much as
    the mixer. Until it is trained the run is not drawn as a parent."""

    profile: str
    code: str
    seed: int
    reason: str


class ReplicateTrained(Event, frozen=True, kw_only=True, tag="replicate.trained.v1", omit_defaults=True):
    """The engineer's report on a replicate: the same code on another seed. Not a new attempt: a failure here is
    the mixer's instability on that seed, recorded, never sent to the debugger."""

    seed: int
    profile: str
    succeeded: bool
    val_loss: float | None = None
    train_loss: float | None = None
    benchmarks: dict[str, float] = {}
    curve: tuple[CurvePoint, ...] = ()
    tokens: int = 0
    device: str = ""
    gpu_seconds: float = 0.0
    cpu_core_seconds: float = 0.0
    wall_seconds: float = 0.0  # no train.started precedes a replicate: how long it ran is told here
    error_kind: str = ""
    message: str = ""
    worker_host: str = ""


class CognitionDoc(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One piece of the cognition base: a chunk of a paper or note, or a curated starter entry."""

    id: str
    kind: Literal["document", "starter"]
    source: str
    title: str
    text: str
    retrieval_text: str  # what is embedded for search
    page: int | None = None
    chunk: int = 0
    # Curated entries only: the design knowledge, field by field.
    insight: str = ""
    symptoms: str = ""
    background: str = ""
    idea: str = ""
    implementation: str = ""
    tags: tuple[str, ...] = ()


class CognitionAdded(Event, frozen=True, kw_only=True, tag="cognition.added.v1"):
    """Entries extracted from one source (``cognition add``, the starter base); ``removed_ids``: the source's
    earlier chunks that its new version no longer has."""

    source: str
    docs: tuple[CognitionDoc, ...]
    removed_ids: tuple[str, ...] = ()


class DeadLettered(Event, frozen=True, kw_only=True, tag="dead_lettered.v1"):
    """A message a consumer could not handle. It travels on ``asiarch.dlq.<original subject>``."""

    original_subject: str
    original_payload: bytes
    consumer: str
    deliveries: int
    error: str

    @classmethod
    def subject(cls) -> str:  # pragma: no cover - the subject depends on the instance, see dlq_subject()
        raise TypeError("a dead letter's subject depends on the original subject: use dlq_subject()")


AnyEvent = Union[
    CampaignStarted,
    CampaignStopped,
    ProposalCreated,
    ProposalRejected,
    MoveLearned,
    TrainStarted,
    TrainSucceeded,
    TrainFailed,
    DebugPatched,
    DebugGaveUp,
    AnalysisCreated,
    JudgeScored,
    FitnessComputed,
    BaselineMeasured,
    CognitionAdded,
    ReplicateRequested,
    ReplicateTrained,
    TrajectoryRecorded,
    DeadLettered,
]

CATALOGUE: tuple[type[Event], ...] = AnyEvent.__args__  # type: ignore[attr-defined]
DOMAIN_EVENTS: tuple[type[Event], ...] = tuple(t for t in CATALOGUE if t is not DeadLettered)
BY_SUBJECT: dict[str, type[Event]] = {t.subject(): t for t in DOMAIN_EVENTS}


# --- older versions and their upcasters ----------------------------------------------------------------------------


def _with_fields(event: Event, current: type[Event], **added: Any) -> Event:
    """``event`` as the ``current`` type: its own fields, plus ``added`` for the ones it did not have."""
    return current(**msgspec.structs.asdict(event), **added)


def upcast_proposal_created_v1(event: Event) -> Event:
    return _with_fields(event, ProposalCreatedV2, profile="")


def upcast_proposal_created_v2(event: Event) -> Event:
    return _with_fields(event, ProposalCreated, move=UNRECORDED_MOVE)


def upcast_campaign_started_v1(event: Event) -> Event:
    return _with_fields(event, CampaignStartedV2)  # the researcher proposed for every campaign then


def upcast_campaign_started_v2(event: Event) -> Event:
    return _with_fields(event, CampaignStarted)  # no control arm then


def upcast_analysis_created_v1(event: Event) -> Event:
    return _with_fields(event, AnalysisCreated)  # no comparison table: it was not kept as data then


def upcast_baseline_measured_v1(event: Event) -> Event:
    return _with_fields(event, BaselineMeasured)  # no curve


# Each legacy type and the pure function that turns it into the next version (chained until a current type).
UPCASTERS: dict[type[Event], Callable[[Event], Event]] = {
    CampaignStartedV1: upcast_campaign_started_v1,
    CampaignStartedV2: upcast_campaign_started_v2,
    ProposalCreatedV1: upcast_proposal_created_v1,
    ProposalCreatedV2: upcast_proposal_created_v2,
    AnalysisCreatedV1: upcast_analysis_created_v1,
    BaselineMeasuredV1: upcast_baseline_measured_v1,
}
LEGACY: tuple[type[Event], ...] = tuple(UPCASTERS)
# Every version a stream holds.
WireEvent = Union[AnyEvent, CampaignStartedV1, CampaignStartedV2, ProposalCreatedV1, ProposalCreatedV2,
                  AnalysisCreatedV1, BaselineMeasuredV1]

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(WireEvent)


def upcast(event: Event) -> Event:
    while type(event) in UPCASTERS:
        event = UPCASTERS[type(event)](event)
    return event


class EventDecodeError(ValueError):
    """The bytes are not a valid event of the catalogue."""


def encode(event: Event) -> bytes:
    return _ENCODER.encode(event)


def decode(payload: bytes) -> Event:
    """The event in ``payload``, upcast to the current version of its type."""
    try:
        return upcast(_DECODER.decode(payload))
    except msgspec.DecodeError as exc:  # ValidationError is a subclass
        raise EventDecodeError(str(exc)) from exc


def subject_of(event: Event) -> str:
    if isinstance(event, DeadLettered):
        return dlq_subject(event.original_subject)
    return type(event).subject()


def dlq_subject(original_subject: str) -> str:
    suffix = original_subject.removeprefix(f"{SUBJECT_PREFIX}.")
    return f"{DLQ_PREFIX}.{suffix}"


def is_dlq_subject(subject: str) -> bool:
    return subject.startswith(f"{DLQ_PREFIX}.")


def caused_by(cause: Event, producer: str, index: int = 0) -> dict[str, str | dt.datetime]:
    """Envelope fields for an event that ``producer`` emits in reaction to ``cause``.

    The id is derived from the cause, so a handler re-run after a crash emits the same ids and the server's
    de-duplication keeps one copy.
    """
    return {
        "event_id": derived_event_id(cause.event_id, producer, index),
        "occurred_at": utc_now(),
        "producer": producer,
        "campaign_id": cause.campaign_id,
        "experiment_id": cause.experiment_id,
        "correlation_id": cause.correlation_id or cause.event_id,
        "causation_id": cause.event_id,
    }
