"""A realistic, deterministic event history for projection, replay and kill tests.

``build_history()`` simulates a campaign: the researcher keeps a few proposals in flight, parents are drawn from
experiments that already have a fitness, some proposals are rejected, training fails with assorted error kinds,
the debugger patches (sometimes successfully, sometimes it gives up), successful runs are analysed, judged and get a
``fitness.computed``. Events of different experiments interleave the way they do on the real bus. Same arguments,
same events (ids and timestamps included).
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from services.memory.cognition import SourceUpdate, cognition_events, starter_update
from services.memory.fitness import fitness_terms
from services.memory.projection import Projector
from services.memory.vectors import VectorStore
from shared.events import (
    AnalysisCreated,
    BaselineMeasured,
    Budget,
    CampaignStarted,
    CampaignStopped,
    CognitionAdded,
    CognitionDoc,
    CurvePoint,
    DebugGaveUp,
    DebugPatched,
    Event,
    FitnessComputed,
    JudgeScored,
    LlmUsage,
    MoveLearned,
    MoveStep,
    ProposalCreated,
    ProposalRejected,
    ReportSection,
    TrainFailed,
    TrainStarted,
    TrainSucceeded,
)
from shared.mixer.edit import unified_diff

START = dt.datetime(2026, 11, 28, 9, 0, 0, tzinfo=dt.timezone.utc)
PROFILE = "smoke"
# The baseline the history's fitness events were computed against (record it to recompute them).
# What memory itself publishes into a new log before anything else: the starter cognition base.
STARTER_EVENTS = len(cognition_events(starter_update(), "memory"))
BASELINE_VAL_LOSSES = (4.02, 3.98)
BASELINE_BENCH_MEANS = (0.31, 0.29)
MAX_ATTEMPTS = 3
_NAMESPACE = uuid.UUID("0e6f3c52-8f0e-4a43-a3c9-3f1a3b7d2c10")

BUILT_IN_MOVES = ("output-gate", "short-conv", "head-decay")
# The fields of a learned move that a history does not vary.
LEARNED_FIELDS = {"rationale": "Seen to help.", "steps": (MoveStep(site="forward", anchor="end", instruction="i"),)}
THEMES = (
    ("gated-delta", "Gate the delta-rule update per head so stale associations decay before they are overwritten."),
    ("decay-retention", "Use a learned per-head exponential decay, as in retention, to stabilise the recurrent state."),
    ("feature-map", "Replace elu+1 with a learnable positive feature map to sharpen the kernel approximation."),
    ("short-conv", "Add a short causal depthwise convolution on keys and values before the linear recurrence."),
    ("chunked-scan", "Compute the recurrence in chunks: quadratic inside the chunk, linear state between chunks."),
    ("householder", "Apply two Householder-style delta steps per token to enlarge the state transition's rank."),
    ("forget-gate", "A data-dependent scalar forget gate on the state, computed from the token with a sigmoid."),
    ("normalised-state", "Normalise the read-out by the key sum to keep the output scale independent of length."),
)
ERRORS = (
    ("runtime", "RuntimeError: The size of tensor a (64) must match the size of tensor b (32) at dimension 3",
     "  File \"mixer.py\", line 41, in forward\n    out = torch.einsum('bhnd,bhde->bhne', q, state)\n"),
    ("nan", "loss is NaN at step 37", "  gate = torch.exp(self.log_decay * x)  # overflow for large x\n"),
    ("memory", "CUDA out of memory. Tried to allocate 2.00 GiB", "  attn = q @ k.transpose(-1, -2)\n"),
    ("causality", "output at position 12 changed when inputs after position 40 were perturbed",
     "  k = k.cumsum(dim=1).flip(1)\n"),
    ("timeout", "training ran past the profile's 600 s budget", "  for t in range(seq_len):  # python loop\n"),
    ("efficiency", "step time 9.4x the linear-attention baseline (limit 4x)", "  state = state.clone()\n"),
)
LLM = "qwen2.5-coder-0.5b"


def code_for(name: str, variant: int) -> str:
    return (
        "import torch\nimport torch.nn.functional as F\n\n\n"
        f"class Mixer(torch.nn.Module):\n    \"\"\"{name}, variant {variant}.\"\"\"\n\n"
        "    def __init__(self, d_model: int, n_heads: int, **kwargs):\n        super().__init__()\n"
        "        self.qkv = torch.nn.Linear(d_model, 3 * d_model)\n"
        f"        self.decay = torch.nn.Parameter(torch.full((n_heads,), {0.9 + variant / 100:.2f}))\n\n"
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
        "        q, k, v = self.qkv(x).chunk(3, dim=-1)\n"
        f"        return F.silu(q) * torch.cumsum(k * v, dim=1) / {variant + 1}\n"
    )


@dataclass
class _Clock:
    rng: random.Random
    seed: int
    n: int = 0
    now: dt.datetime = START

    def envelope(self, campaign: str, experiment: str = "", cause: str = "") -> dict[str, object]:
        self.n += 1
        self.now += dt.timedelta(seconds=self.rng.randint(1, 90), milliseconds=self.rng.randint(0, 999))
        return {"event_id": uuid.uuid5(_NAMESPACE, f"{self.seed}/{self.n}").hex, "occurred_at": self.now,
                "producer": "history", "campaign_id": campaign, "experiment_id": experiment,
                "correlation_id": experiment, "causation_id": cause}


@dataclass
class _Sim:
    clock: _Clock
    rng: random.Random
    campaign: str
    ranked: list[tuple[float, str]] = field(default_factory=list)
    counter: int = 0


def _llm(rng: random.Random) -> LlmUsage:
    return LlmUsage(model=LLM, prompt_tokens=rng.randint(400, 2400), completion_tokens=rng.randint(100, 900),
                    latency_s=round(rng.uniform(2, 30), 2))


def _experiment(sim: _Sim) -> Iterator[Event]:
    """One experiment's events in order; the simulation interleaves several of these."""
    rng, clock = sim.rng, sim.clock
    sim.counter += 1
    exp = f"{sim.campaign}-exp-{sim.counter:03d}"
    theme, motivation = THEMES[rng.randrange(len(THEMES))]
    best = sorted(sim.ranked, reverse=True)
    parents = tuple(e for _, e in best[:1]) + tuple(e for _, e in rng.sample(best[1:], min(2, len(best[1:]))))
    code = code_for(theme, sim.counter)
    move = BUILT_IN_MOVES[sim.counter % len(BUILT_IN_MOVES)] if sim.counter % 4 else f"learned-{theme}"
    proposal = ProposalCreated(**clock.envelope(sim.campaign, exp), name=f"{theme}-{sim.counter}",
                               motivation=motivation, code=code, profile=PROFILE, move=move,
                               parent_ids=parents or ("baseline:linear_attention",),
                               cognition_ids=(f"starter:{theme}",), llm=_llm(rng))
    if move.startswith("learned-"):  # made by a move learned with it (a theme learned twice keeps its first)
        envelope = {name: getattr(proposal, name) for name in Event.__struct_fields__}
        yield MoveLearned(**{**envelope, "event_id": uuid.uuid5(_NAMESPACE, exp).hex}, **LEARNED_FIELDS,
                          move_id=move, title=f"{theme} move", provenance=f"cognition:{theme}")
    yield proposal
    if rng.random() < 0.1:
        yield ProposalRejected(**clock.envelope(sim.campaign, exp, proposal.event_id), reason="duplicate",
                               detail="cosine 0.96 to an earlier proposal")
        return
    yield from _train(sim, exp, code, proposal.event_id)


def _train(sim: _Sim, exp: str, code: str, cause: str) -> Iterator[Event]:
    rng, clock = sim.rng, sim.clock
    for attempt in range(1, MAX_ATTEMPTS + 1):
        started = TrainStarted(**clock.envelope(sim.campaign, exp, cause), attempt=attempt, worker_host="ws-1",
                               device="cpu", profile=PROFILE)
        yield started
        if rng.random() < (0.45 if attempt == 1 else 0.35):
            kind, message, trace = ERRORS[rng.randrange(len(ERRORS))]
            failed = TrainFailed(**clock.envelope(sim.campaign, exp, started.event_id), attempt=attempt,
                                 error_kind=kind, message=message, code=code, worker_host="ws-1",
                                 traceback=f"Traceback (most recent call last):\n{trace}{message}\n",
                                 log_tail=f"step {rng.randint(1, 60)} ...", device_seconds=round(rng.uniform(1, 40), 2))
            yield failed
            if attempt == MAX_ATTEMPTS:
                yield DebugGaveUp(**clock.envelope(sim.campaign, exp, failed.event_id), attempts=attempt,
                                  last_error_kind=kind, last_error=message)
                return
            new_code = code.replace("dim=1)", "dim=1).clamp(-1e4, 1e4)", 1) + f"# fix {attempt}: {kind}\n"
            patched = DebugPatched(**clock.envelope(sim.campaign, exp, failed.event_id), attempt=attempt + 1,
                                   diagnosis=f"{kind}: clamp and reshape before the einsum", code=new_code,
                                   diff=unified_diff(code, new_code), llm=_llm(rng))
            yield patched
            code, cause = new_code, patched.event_id
            continue
        yield from _results(sim, exp, attempt, started.event_id)
        return


def _results(sim: _Sim, exp: str, attempt: int, cause: str) -> Iterator[Event]:
    rng, clock = sim.rng, sim.clock
    val = round(rng.uniform(3.7, 4.4), 4)
    bench = {"lambada": round(rng.uniform(0.2, 0.4), 4), "mqar": round(rng.uniform(0.1, 0.5), 4)}
    curve = tuple(CurvePoint(step=s * 10, tokens=s * 20480, loss=round(8.0 - s * (8.0 - val) / 10, 4))
                  for s in range(11))
    succeeded = TrainSucceeded(
        **clock.envelope(sim.campaign, exp, cause), attempt=attempt, profile=PROFILE, curve=curve,
        train_loss=round(val - 0.05, 4), val_loss=val, benchmarks=bench, params=1_000_000 + rng.randint(0, 99_999),
        tokens=204_800, tokens_per_s=round(rng.uniform(8e3, 16e3), 1), device="cpu", gpu_seconds=0.0,
        cpu_core_seconds=round(rng.uniform(20, 60), 2), checkpoint_path=f"runs/{exp}/ckpt.pt", worker_host="ws-1",
        behaviour=(val, float(attempt)),
    )
    yield succeeded
    yield AnalysisCreated(**clock.envelope(sim.campaign, exp, succeeded.event_id), compared_with=(),
                          sections=(ReportSection(title="Result", body=f"val loss {val} against the parent."),
                                    ReportSection(title="Why", body="The gate keeps the state bounded.")),
                          gallery_path=f"gallery/{exp}", llm=_llm(rng))
    p, i, c = rng.randint(3, 9), rng.randint(2, 9), rng.randint(3, 8)
    judged = JudgeScored(**clock.envelope(sim.campaign, exp, succeeded.event_id), performance=p, innovation=i,
                         complexity=c, weighted=round(0.3 * p + 0.25 * i + 0.45 * c, 3), rationale="anchored",
                         llm=_llm(rng))
    yield judged
    # Only the reference is measured at the profile: no task is shown to carry signal, the benchmark term is neutral.
    terms = fitness_terms(val, None, sum(BASELINE_VAL_LOSSES) / 2, None, judged.weighted)
    yield FitnessComputed(**clock.envelope(sim.campaign, exp, judged.event_id), loss_term=terms.loss_term,
                          benchmark_term=terms.benchmark_term, judge_term=terms.judge_term, total=terms.total)
    sim.ranked.append((terms.total, exp))


def build_history(seed: int = 0, experiments: int = 36, in_flight: int = 3,
                  campaign: str = "camp-a") -> list[Event]:
    """A campaign of ``experiments`` experiments, ``in_flight`` at a time, bracketed by start and stop."""
    rng = random.Random(seed)
    clock = _Clock(rng, seed)
    sim = _Sim(clock, rng, campaign)
    events: list[Event] = [CampaignStarted(**clock.envelope(campaign), profile=PROFILE, llm_model=LLM, seed=seed,
                                           budget=Budget(experiments=experiments, cpu_hours=2.0))]
    active: list[Iterator[Event]] = []
    started = 0
    while started < experiments or active:
        while len(active) < in_flight and started < experiments:
            active.append(_experiment(sim))
            started += 1
        pick = rng.randrange(len(active))
        event = next(active[pick], None)
        if event is None:
            active.pop(pick)
        else:
            events.append(event)
    events.append(CampaignStopped(**clock.envelope(campaign), reason="budget reached"))
    return events


def baseline_events(profile: str = PROFILE, mixer: str = "deltanet", losses: tuple[float, ...] = BASELINE_VAL_LOSSES,
                    bench_means: tuple[float, ...] = BASELINE_BENCH_MEANS,
                    reference: bool = True) -> list[BaselineMeasured]:
    """What ``asiarch baselines`` publishes for one mixer: one event per seed (each benchmark at the seed's mean)."""
    at = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.timezone.utc)
    return [BaselineMeasured(event_id=f"baseline-{profile}-{mixer}-{seed}", occurred_at=at + dt.timedelta(minutes=seed),
                             producer="cli", campaign_id="", profile=profile, mixer=mixer, seed=seed, val_loss=loss,
                             benchmarks={"mqar": bench, "piqa": bench}, tokens=204_800, device="cpu",
                             fitness_reference=reference)
            for seed, (loss, bench) in enumerate(zip(losses, bench_means, strict=True))]


def cognition_event(source: str = "notes/gates.md", chunks: int = 3) -> CognitionAdded:
    """A note of ``chunks`` chunks added to the cognition base."""
    docs = tuple(CognitionDoc(id=f"doc:{source}:{n}", kind="document", source=source, title="Gates",
                              text=f"Gate number {n} keeps the state bounded.",
                              retrieval_text=f"Gates\nGate number {n} keeps the state bounded.", chunk=n)
                 for n in range(chunks))
    return CognitionAdded(event_id=f"cognition-{source}-{chunks}",
                          occurred_at=dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.timezone.utc), producer="memory",
                          campaign_id="", source=source, docs=docs)


def numbered(events: list[Event], start: int = 1) -> list[tuple[int, Event]]:
    """(stream sequence, event) pairs, as the bus would deliver them."""
    return list(enumerate(events, start=start))


def apply_updates(updates: list[SourceUpdate], projector: Projector, vectors: VectorStore) -> int:
    """Project the cognition events of ``updates`` as memory's consumer would; returns the last sequence."""
    seq = projector.last_seq()
    for update in updates:
        for event in cognition_events(update, "memory"):
            seq += 1
            projector.apply(event, seq)
            vectors.apply(event, seq)
    vectors.flush()
    return seq
