"""``asiarch campaign yield``: what a campaign produced and where its time went, counted from the event log.

The stream is the source of truth, so the table is a fold over one campaign's events: proposals, rejections by
reason, first-try successes, debugger fixes by the number of patches they took, give-ups, trained models, and how
many of those beat a reference baseline by more than its noise floor, their parent beyond noise, and the best
baseline of the profile beyond noise (shared/noise.py: means apart by more than 2 combined sd; a run on one seed
has the profile's seed noise). Time is split into LLM time (the latency
every agent reports with its output) and training time (``train.started`` to its result); the two overlap when
agents work in parallel, so each is a share of the campaign's wall time, not of a whole.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shared import bus
from shared.cli.stack import connect_nats
from shared.events import (
    CROSSOVER_MOVE,
    FREE_MOVE,
    AnalysisCreated,
    BaselineMeasured,
    CampaignStarted,
    CampaignStopped,
    DebugGaveUp,
    DebugPatched,
    Event,
    JudgeScored,
    LlmUsage,
    MoveLearned,
    ProposalCreated,
    ProposalRejected,
    ReplicateTrained,
    TrainFailed,
    TrainStarted,
    TrainSucceeded,
    decode,
)
from shared.mixer.baselines import baseline_of_ref
from shared.mixer.profiles import profile_seed
from shared.noise import Measured, best_of, compare, pooled_sd

# Beating a baseline "beyond its noise floor": below its mean by more than this many seed standard deviations.
NOISE_SIGMAS = 2.0


@dataclass(frozen=True)
class Reference:
    """A baseline's val loss over seeds at one profile."""

    name: str
    mean: float
    std: float

    @property
    def threshold(self) -> float:
        return self.mean - NOISE_SIGMAS * self.std


@dataclass
class Measurements:
    """Every val loss in the log, whichever campaign measured it: a run's parent may be another campaign's."""

    runs: dict[str, dict[int, float]] = field(default_factory=dict)  # experiment -> seed -> val loss
    parents: dict[str, str] = field(default_factory=dict)  # experiment -> the parent it was derived from
    baselines: dict[str, dict[str, dict[int, float]]] = field(default_factory=dict)  # profile -> mixer -> seed

    def add(self, event: Event) -> None:
        if isinstance(event, ProposalCreated) and event.parent_ids:
            self.parents[event.experiment_id] = event.parent_ids[0]
        elif isinstance(event, TrainSucceeded):
            self.runs.setdefault(event.experiment_id, {})[profile_seed(event.profile)] = event.val_loss
        elif isinstance(event, ReplicateTrained) and event.succeeded and event.val_loss is not None:
            self.runs.setdefault(event.experiment_id, {})[event.seed] = event.val_loss
        elif isinstance(event, BaselineMeasured):
            self.baselines.setdefault(event.profile, {}).setdefault(event.mixer, {})[event.seed] = event.val_loss

    def of(self, ref: str, profile: str) -> Measured | None:
        """An experiment's val loss over its seeds, or a baseline's (``baseline:<name>``) at the profile."""
        name = baseline_of_ref(ref)
        seeds = self.baselines.get(profile, {}).get(name, {}) if name else self.runs.get(ref, {})
        return Measured.of(seeds.values())

    def noise_floor(self, profile: str) -> float | None:
        return pooled_sd(list(seeds.values()) for seeds in self.baselines.get(profile, {}).values())

    def best_baseline(self, profile: str) -> str | None:
        measured = {mixer: m for mixer, seeds in self.baselines.get(profile, {}).items()
                    if (m := Measured.of(seeds.values())) is not None}
        return best_of(measured)

    def beats(self, experiment: str, other: str | None, profile: str) -> bool:
        run, against = self.of(experiment, profile), self.of(other, profile) if other else None
        return run is not None and against is not None and \
            compare(run, against, self.noise_floor(profile)) == "better"


@dataclass
class LlmTime:
    tasks: int = 0  # agent steps that used the LLM (one may make several requests)
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # of the prompt tokens, those the server's cache had evaluated already
    completion_tokens: int = 0
    seconds: float = 0.0

    def add(self, usage: LlmUsage | None) -> None:
        if usage is not None:
            self.tasks += 1
            self.prompt_tokens += usage.prompt_tokens
            self.cached_prompt_tokens += usage.cached_prompt_tokens
            self.completion_tokens += usage.completion_tokens
            self.seconds += usage.latency_s

    @property
    def completion_tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds else 0.0


@dataclass
class YieldTable:
    campaign_id: str
    profile: str = ""
    model: str = ""
    proposed: int = 0
    promoted: int = 0  # proposals at another profile: the campaign's runs promoted to verify there
    rejected: Counter[str] = field(default_factory=Counter)
    passed_first_try: int = 0
    fixed_after_patches: Counter[int] = field(default_factory=Counter)
    gave_up: int = 0
    trained: int = 0
    val_losses: list[float] = field(default_factory=list)
    beat_reference: int | None = None
    reference: Reference | None = None
    trained_ids: list[str] = field(default_factory=list)
    moves_learned: int = 0  # moves this campaign added to the library
    # Each proposal's move, and every move learned by any campaign up to now (a later campaign reuses them).
    moves: dict[str, str] = field(default_factory=dict)
    learned_ids: set[str] = field(default_factory=set)
    # The first parent of each of the researcher's proposals at the profile (its rejected drafts included).
    first_parents: Counter[str] = field(default_factory=Counter)
    beat_parent_beyond_noise: int | None = None  # None: no parent could be compared (no noise known)
    beat_best_baseline_beyond_noise: int | None = None  # None: no baseline measured at the profile
    best_baseline: str | None = None
    llm: LlmTime = field(default_factory=LlmTime)
    llm_by_agent: dict[str, LlmTime] = field(default_factory=dict)
    training_seconds: float = 0.0
    wall_seconds: float = 0.0
    finished: bool = False

    @property
    def trained_with_learned_moves(self) -> int:
        """Trained mixers whose change is not one of the built-in moves: a learned move, the LLM's own, or a
        component of a reference mixer ported into the parent."""
        not_built_in = self.learned_ids | {FREE_MOVE, CROSSOVER_MOVE}
        return sum(1 for e in self.trained_ids if self.moves.get(e) in not_built_in)

    @property
    def parents_from_baselines(self) -> int:
        return sum(n for parent, n in self.first_parents.items() if baseline_of_ref(parent) is not None)

    def share(self, seconds: float) -> float:
        return seconds / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def proposals_per_hour(self) -> float:
        """Proposals the researcher made (its rejected drafts included) per hour of the campaign's wall time."""
        return self.proposed * 3600 / self.wall_seconds if self.wall_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "campaign_id": self.campaign_id, "profile": self.profile, "model": self.model, "finished": self.finished,
            "proposed": self.proposed, "promoted": self.promoted, "rejected": dict(self.rejected),
            "passed_first_try": self.passed_first_try,
            "fixed_after_patches": {str(k): v for k, v in sorted(self.fixed_after_patches.items())},
            "gave_up": self.gave_up, "trained": self.trained,
            "moves_learned": self.moves_learned, "trained_with_learned_moves": self.trained_with_learned_moves,
            "distinct_parents": len(self.first_parents), "parents_from_baselines": self.parents_from_baselines,
            "best_val_loss": min(self.val_losses) if self.val_losses else None,
            "beat_reference": self.beat_reference,
            "beat_parent_beyond_noise": self.beat_parent_beyond_noise,
            "beat_best_baseline_beyond_noise": self.beat_best_baseline_beyond_noise,
            "best_baseline": self.best_baseline,
            "reference": None if self.reference is None else {
                "name": self.reference.name, "mean": self.reference.mean, "std": self.reference.std,
                "threshold": self.reference.threshold},
            "llm": {"tasks": self.llm.tasks, "prompt_tokens": self.llm.prompt_tokens,
                    "cached_prompt_tokens": self.llm.cached_prompt_tokens,
                    "completion_tokens": self.llm.completion_tokens, "seconds": round(self.llm.seconds, 1),
                    "completion_tokens_per_s": round(self.llm.completion_tokens_per_s, 2),
                    "by_agent": {k: round(v.seconds, 1) for k, v in sorted(self.llm_by_agent.items())}},
            "wall_seconds": round(self.wall_seconds, 1), "training_seconds": round(self.training_seconds, 1),
            "proposals_per_hour": round(self.proposals_per_hour, 2),
            "llm_share": round(self.share(self.llm.seconds), 3),
            "training_share": round(self.share(self.training_seconds), 3),
        }


def tally(events: Iterable[Event], campaign_id: str, reference: Reference | None = None) -> YieldTable:
    """Fold one campaign's events (in stream order) into its yield table; other campaigns' events are skipped."""
    table = YieldTable(campaign_id, reference=reference)
    started: dict[tuple[str, int], Event] = {}
    measurements = Measurements()
    first_at = last_at = None
    for event in events:
        measurements.add(event)
        if isinstance(event, MoveLearned):
            table.learned_ids.add(event.move_id)
        if event.campaign_id != campaign_id:
            continue
        first_at = first_at or event.occurred_at
        last_at = event.occurred_at
        _count(table, event, started)
    if first_at is not None and last_at is not None:
        table.wall_seconds = (last_at - first_at).total_seconds()
    if reference is not None:
        table.beat_reference = sum(1 for loss in table.val_losses if loss < reference.threshold)
    count_beyond_noise(table, measurements)
    return table


def count_beyond_noise(table: YieldTable, measurements: Measurements) -> None:
    """How many trained runs (over all their seeds) beat their parent, and the profile's best baseline, beyond
    noise."""
    trained = dict.fromkeys(table.trained_ids)
    profile = table.profile
    if measurements.noise_floor(profile) is not None or any(
            (m := measurements.of(e, profile)) is not None and m.seeds > 1 for e in trained):
        table.beat_parent_beyond_noise = sum(measurements.beats(e, measurements.parents.get(e), profile)
                                             for e in trained)
    table.best_baseline = measurements.best_baseline(profile)
    if table.best_baseline is not None:
        best = f"baseline:{table.best_baseline}"
        table.beat_best_baseline_beyond_noise = sum(measurements.beats(e, best, profile) for e in trained)


def _count(table: YieldTable, event: Event, started: dict[tuple[str, int], Event]) -> None:
    if isinstance(event, CampaignStarted):
        table.profile, table.model = event.profile, event.llm_model
    elif isinstance(event, CampaignStopped):
        table.finished = True
    elif isinstance(event, MoveLearned):
        table.moves_learned += 1
    elif isinstance(event, ProposalCreated):
        table.moves[event.experiment_id] = event.move
        if at_another_profile(table, event.profile):
            table.promoted += 1
        else:
            table.proposed += 1
            table.first_parents.update(event.parent_ids[:1])
    elif isinstance(event, ProposalRejected):
        # The engineer rejects proposals that were already counted as created; the researcher's are new.
        if event.producer == "researcher":
            table.proposed += 1
            table.first_parents.update(event.parent_ids[:1])
        table.rejected[rejection_label(event)] += 1
    elif isinstance(event, TrainStarted):
        started[(event.experiment_id, event.attempt)] = event
    elif isinstance(event, TrainSucceeded | TrainFailed):
        begin = started.pop((event.experiment_id, event.attempt), None)
        if begin is not None:
            table.training_seconds += (event.occurred_at - begin.occurred_at).total_seconds()
        # A promotion's run at a larger profile (`asiarch promote`) is not one of the campaign's own results.
        if isinstance(event, TrainSucceeded) and not at_another_profile(table, event.profile):
            _count_success(table, event)
    elif isinstance(event, ReplicateTrained):
        # No train.started before a replicate: its own report says how long it ran.
        table.training_seconds += event.wall_seconds
    elif isinstance(event, DebugGaveUp):
        table.gave_up += 1
    _count_llm(table, event)


def at_another_profile(table: YieldTable, profile: str) -> bool:
    return bool(table.profile and profile and profile != table.profile)


def rejection_label(event: ProposalRejected) -> str:
    """The reason, with a duplicate found by its outputs (the engineer's probe) told from one found by its text."""
    if event.reason == "duplicate" and event.producer == "engineer":
        return "duplicate outputs"
    return event.reason


def _count_success(table: YieldTable, event: TrainSucceeded) -> None:
    table.trained += 1
    table.trained_ids.append(event.experiment_id)
    table.val_losses.append(event.val_loss)
    if event.attempt == 1:
        table.passed_first_try += 1
    else:
        table.fixed_after_patches[event.attempt - 1] += 1


def _count_llm(table: YieldTable, event: Event) -> None:
    if isinstance(event, ProposalCreated | ProposalRejected | DebugPatched | DebugGaveUp | AnalysisCreated
                  | JudgeScored):
        table.llm.add(event.llm)
        table.llm_by_agent.setdefault(event.producer, LlmTime()).add(event.llm)


# --- reading ------------------------------------------------------------------------------------------------------


async def campaign_events(nats_url: str) -> list[Event]:
    """Every domain event in the stream, decoded (dead letters and undecodable bytes are not the campaign's)."""
    nc = await connect_nats(nats_url, "asiarch-yield")
    try:
        events: list[Event] = []
        async for message in bus.read_stream(nc.jetstream()):
            if message.subject.startswith(f"{bus.STREAM_SUBJECTS[0].rstrip('>')}dlq."):
                continue
            events.append(decode(message.data))
        return events
    finally:
        await nc.close()


def reference_from_events(events: list[Event], profile: str, name: str) -> Reference | None:
    """The named baseline at the profile from its ``baseline.measured`` events (a seed measured again counts
    once, with its latest value), if it was measured on ≥ 2 seeds."""
    measurements = Measurements()
    for event in events:
        if isinstance(event, BaselineMeasured):
            measurements.add(event)
    measured = measurements.of(f"baseline:{name}", profile)
    if measured is None or measured.sd is None:
        return None
    return Reference(name, measured.mean, measured.sd)


def rows(table: YieldTable) -> list[tuple[str, str]]:
    """The table as (what, how many) lines for a terminal."""
    fixed = ", ".join(f"{n} after {k} patch{'es' if k > 1 else ''}"
                      for k, n in sorted(table.fixed_after_patches.items()))
    rejected = ", ".join(f"{reason} {n}" for reason, n in table.rejected.most_common())
    ref = table.reference
    beat = ("-" if ref is None or table.beat_reference is None else
            f"{table.beat_reference} (val loss < {ref.threshold:.4f} = {ref.name} {ref.mean:.4f} − "
            f"{NOISE_SIGMAS:g}·{ref.std:.4f})")
    llm = table.llm
    return [
        ("proposed", str(table.proposed) + (f" (and {table.promoted} promoted to another profile)"
                                            if table.promoted else "")),
        ("rejected", f"{sum(table.rejected.values())}" + (f" ({rejected})" if rejected else "")),
        ("passed checks first try", str(table.passed_first_try)),
        ("fixed by the debugger", f"{sum(table.fixed_after_patches.values())}" + (f" ({fixed})" if fixed else "")),
        ("debugger gave up", str(table.gave_up)),
        ("trained", str(table.trained)),
        ("parents drawn", f"{len(table.first_parents)} distinct; {table.parents_from_baselines} of "
                          f"{sum(table.first_parents.values())} proposals from a baseline"),
        ("moves learned", str(table.moves_learned)),
        ("trained with a learned move or the LLM's own", str(table.trained_with_learned_moves)),
        ("best val loss", f"{min(table.val_losses):.4f}" if table.val_losses else "-"),
        ("beat the reference beyond noise", beat),
        ("beat their parent beyond noise", _counted(table.beat_parent_beyond_noise, "no seed noise measured")),
        ("beat the best baseline beyond noise",
         _counted(table.beat_best_baseline_beyond_noise, "no baseline measured") +
         (f" (best baseline: {table.best_baseline})" if table.best_baseline else "")),
        ("LLM", f"{llm.tasks} agent tasks, {llm.prompt_tokens:,} prompt ({llm.cached_prompt_tokens:,} of them "
                f"cached) + {llm.completion_tokens:,} completion tokens, {llm.completion_tokens_per_s:.1f} completion "
                "tok/s end to end"),
        ("wall time", f"{table.wall_seconds / 60:.1f} min" + ("" if table.finished else " (still running)")),
        ("proposals per hour", f"{table.proposals_per_hour:.1f} (rejected drafts included)"),
        # Summed over agents, which run side by side: the share can pass 100%.
        ("LLM busy time", f"{llm.seconds / 60:.1f} min = {table.share(llm.seconds):.0%} of wall time"),
        ("training time", f"{table.training_seconds / 60:.1f} min = {table.share(table.training_seconds):.0%} of "
                        "wall time"),
    ]


def _counted(value: int | None, unknown: str) -> str:
    return f"- ({unknown})" if value is None else str(value)
