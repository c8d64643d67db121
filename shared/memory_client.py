"""The agents' client of memory's query API (HTTP). Responses are decoded into typed structs, never passed as dicts.

Every call degrades loudly: a memory that does not answer raises ``MemoryUnavailable`` (a transient error), so the
caller's event is retried rather than handled without its context.
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from shared.errors import AsiarchError, TransientError
from shared.noise import Measured, best_of


class MemoryUnavailable(TransientError):
    code = "memory_unavailable"


class UnknownExperiment(AsiarchError):
    """Memory has projected the event that names an experiment, yet holds no such experiment: a consumer does
    nothing with it rather than act on a guess (not transient: asking again changes nothing)."""

    code = "unknown_experiment"


class NotYetProjected(TransientError):
    """Memory has not applied the event the caller is handling yet: retry later, never act on the older view."""

    code = "not_yet_projected"


class _Doc(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    pass


class ExperimentBrief(_Doc):
    id: str
    name: str = ""
    status: str = ""
    parent_ids: list[str] = []
    fitness: float | None = None
    val_loss: float | None = None  # the mean over the seeds it was trained on
    val_loss_sd: float | None = None  # None below two seeds
    seeds: int = 0
    bench_mean: float | None = None
    benchmarks: dict[str, float] = {}  # each task's mean over the seeds
    profile: str = ""
    move: str = ""
    moves_in_line: list[str] = []  # the library moves made along its first-parent line

    def measured(self) -> Measured | None:
        if self.val_loss is None:
            return None
        return Measured(self.val_loss, self.val_loss_sd, max(1, self.seeds))


class Section(_Doc):
    title: str
    body: str


class Analysis(_Doc):
    sections: list[Section] = []
    removed_statements: list[str] = []


class TrainInfo(_Doc):
    """The first seed's training, as train.succeeded reported it."""

    val_loss: float | None = None
    curve: list[tuple[int, int, float | None]] = []
    params: int = 0
    tokens: int = 0
    tokens_per_s: float = 0.0
    device: str = ""
    checkpoint_path: str = ""


class Judgement(_Doc):
    performance: int
    innovation: int
    complexity: int
    rationale: str = ""


class Experiment(ExperimentBrief):
    campaign_id: str = ""
    motivation: str = ""
    code: str = ""
    analysis: Analysis | None = None
    train: TrainInfo | None = None
    judge: Judgement | None = None


class Lineage(_Doc):
    parents: list[ExperimentBrief] = []
    missing_parents: list[str] = []  # parent references with no experiment (a built-in baseline: "baseline:<name>")
    children: list[ExperimentBrief] = []
    siblings: list[ExperimentBrief] = []


class ExperimentWithLineage(_Doc):
    experiment: Experiment
    lineage: Lineage


class ParentSample(_Doc):
    parent: ExperimentBrief | None = None
    references: list[ExperimentBrief] = []
    ranked: int = 0


class Hit(_Doc):
    id: str
    score: float
    label: str = ""
    source: str | None = None
    page: int | None = None
    text: str = ""  # cognition only: the entry's design insight and implementation guidance


class SearchResult(_Doc):
    hits: list[Hit] = []


class Fix(_Doc):
    attempt: int
    diagnosis: str
    diff: str


class FailureHit(_Doc):
    id: str
    score: float
    error_kind: str
    message: str
    traceback_tail: str = ""
    fix: Fix | None = None
    fix_worked: bool | None = None
    signature: str = ""


class FailureSearch(_Doc):
    hits: list[FailureHit] = []


class BaselineRun(_Doc):
    val_loss: float | None = None
    benchmarks: dict[str, float] = {}
    curve: list[tuple[int, int, float | None]] = []


class BaselineMixer(_Doc):
    mixer: str
    seeds: int = 0
    val_loss_mean: float | None = None
    val_loss_std: float | None = None
    runs: dict[str, BaselineRun] = {}

    def measured(self) -> Measured | None:
        return None if self.val_loss_mean is None else Measured(self.val_loss_mean, self.val_loss_std, self.seeds)

    def task_means(self, tasks: list[str]) -> dict[str, float]:
        """Each task's mean score over this baseline's seeds."""
        means = {}
        for task in tasks:
            scores = [run.benchmarks[task] for run in self.runs.values() if task in run.benchmarks]
            if scores:
                means[task] = sum(scores) / len(scores)
        return means


class ProfileBaselines(_Doc):
    """What memory holds on a profile's baselines (its /baselines/{profile})."""

    profile: str
    mixers: list[BaselineMixer] = []
    noise_sd: float | None = None
    signal_tasks: list[str] = []

    def measured(self) -> dict[str, Measured]:
        return {m.mixer: measured for m in self.mixers if (measured := m.measured()) is not None}

    def mixer(self, name: str) -> BaselineMixer | None:
        return next((m for m in self.mixers if m.mixer == name), None)

    def best(self) -> BaselineMixer | None:
        """The best baseline (``shared.noise.best_of``)."""
        best = best_of(self.measured())
        return self.mixer(best) if best else None


class Behaviour(_Doc, kw_only=True):
    experiment_id: str
    name: str = ""
    behaviour: list[float]


class Behaviours(_Doc):
    items: list[Behaviour] = []


class MoveStep(_Doc):
    site: str
    anchor: str
    instruction: str


class LearnedMove(_Doc):
    id: str
    title: str
    rationale: str
    provenance: str
    steps: list[MoveStep]
    cognition_ids: list[str] = []
    requires: str = ""


class MoveRecord(_Doc):
    drawn: int = 0
    settled: int = 0
    trained: int = 0
    beat_parent: int = 0


class Moves(_Doc):
    learned: list[LearnedMove] = []
    records: dict[str, MoveRecord] = {}


class MemoryClient:
    def __init__(self, base_url: str, timeout_s: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s, transport=transport)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _get(self, path: str, params: dict[str, Any], into: type[Any]) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        try:
            response = await self.http.get(path, params=clean)
        except httpx.HTTPError as exc:
            raise MemoryUnavailable(f"memory at {self.base_url} did not answer {path}: {exc}") from exc
        if response.status_code == 404:
            return None
        if response.status_code == 409:
            raise NotYetProjected(f"memory on {path}: {response.json().get('detail', response.text[:200])}")
        if response.status_code >= 500:
            raise MemoryUnavailable(f"memory answered {response.status_code} on {path}: {response.text[:200]}")
        response.raise_for_status()
        return msgspec.json.decode(response.content, type=into)

    async def sample_parents(self, campaign_id: str | None, seed: int | None, references: int = 3,
                             island: int | None = None, islands: int = 0) -> ParentSample:
        """A parent and references (two-tier sampling), from one island's experiments with ``islands`` > 0."""
        return await self._get("/sample/parents", {"campaign_id": campaign_id, "seed": seed, "references": references,
                                                    "island": island if islands else None,
                                                    "islands": islands or None}, ParentSample)

    async def experiment(self, experiment_id: str, as_of: int = 0) -> ExperimentWithLineage | None:
        """The experiment as memory holds it once it has projected stream sequence ``as_of`` (NotYetProjected
        before); None when memory does not know it."""
        return await self._get(f"/experiments/{experiment_id}", {"as_of": as_of or None}, ExperimentWithLineage)

    async def known_experiment(self, experiment_id: str, as_of: int, doing: str) -> ExperimentWithLineage:
        """The experiment an event memory has projected names (``as_of`` its sequence); UnknownExperiment when
        memory holds none, for the consumer ``doing`` something with it."""
        found = await self.experiment(experiment_id, as_of=as_of)
        if found is None:
            raise UnknownExperiment(f"memory has projected {experiment_id}'s training but knows no such "
                                    f"experiment: nothing to {doing}")
        return found

    async def search(self, index: str, query: str, k: int = 5) -> list[Hit]:
        result = await self._get(f"/search/{index}", {"q": query[:4000], "k": k}, SearchResult)
        return result.hits if result else []

    async def similar_failures(self, query: str, k: int = 3, only_fixed: bool = True,
                               signature: str = "") -> list[FailureHit]:
        """Past failures like this one with their fixes; those that worked (on ``signature`` first) lead."""
        params = {"q": query[:4000], "k": k, "only_fixed": only_fixed} | ({"signature": signature} if signature else {})
        result = await self._get("/failures/search", params, FailureSearch)
        return result.hits if result else []

    async def baselines(self, profile: str) -> ProfileBaselines:
        found = await self._get(f"/baselines/{profile}", {}, ProfileBaselines)
        return found if found is not None else ProfileBaselines(profile=profile)

    async def behaviours(self, profile: str) -> list[Behaviour]:
        """Trained mixers' behaviour signatures at the profile."""
        result = await self._get("/behaviours", {"profile": profile}, Behaviours)
        return result.items if result else []

    async def moves(self, campaign_id: str | None = None, model: str | None = None) -> Moves:
        """The moves campaigns learned, and each move's record (over every campaign or one, every LLM or one)."""
        found = await self._get("/moves", {"campaign_id": campaign_id, "model": model}, Moves)
        return found if found is not None else Moves()
