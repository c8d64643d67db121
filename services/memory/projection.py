"""The MongoDB projection of the event log: experiments, failures, campaigns, the measured baselines, the
cognition base, the moves learned, and the tracking state.

Every document written here carries ``_seq``, the stream sequence of the last event that changed it, and every
write is guarded by ``_seq < seq``. So an event delivered twice changes nothing, and an event half-applied before a
crash (experiment written, failure not yet) is finished on redelivery without repeating the part already done.
``tracking`` holds the last sequence the whole projection finished; events at or below it are skipped outright.

Events must be applied in stream order by a single writer (one projector per database): each handler reads the
document it updates, changes it in Python and replaces it whole (guarded). Partial update operators are avoided on
purpose: the embedded nx-27017 server mangles ``$push`` of sub-documents, ignores ``$addToSet``, turns a ``$set``
datetime into a string and rounds a ``$set`` float, whereas a replaced document round-trips exactly there and on
MongoDB 7. Timestamps come from the events, never from the clock, so a replay writes identical documents.

``apply_all(..., batch=N)`` is the replay path: documents stay in memory and go out in one bulk write per N events
(~7x faster on nx-27017), tracking last; after a drop (``fresh``) no document is looked up that was not written.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import statistics
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict
from typing import Any

import msgspec
from pymongo import ReplaceOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.memory.cognition import COGNITION, as_document
from shared.events import (
    NO_ISLAND,
    NOT_LIBRARY_MOVES,
    AnalysisCreated,
    BaselineMeasured,
    CampaignStarted,
    CampaignStopped,
    CognitionAdded,
    DebugGaveUp,
    DebugPatched,
    Event,
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
)
from shared.mixer.edit import unified_diff
from shared.mixer.frames import error_signature
from shared.mixer.profiles import profile_seed
from shared.noise import Measured, best_of, pooled_sd, task_signal

log = logging.getLogger(__name__)

EXPERIMENTS = "experiments"
FAILURES = "failures"
CAMPAIGNS = "campaigns"
TRACKING = "tracking"
# Each profile's fitness reference (the seeds of the baseline fitness is measured against) and every measured
# baseline by profile and mixer.
BASELINES = "baselines"
BASELINE_MIXERS = "baseline_mixers"
# The moves added to the library during campaigns (``move.learned``); the built-in ones are the researcher's file.
MOVES = "moves"
# Every collection here derives from the event log: dropped and rebuilt by a replay, compared by the replay tests.
PROJECTED_COLLECTIONS: tuple[str, ...] = (EXPERIMENTS, FAILURES, CAMPAIGNS, BASELINES, BASELINE_MIXERS, COGNITION,
                                          MOVES, TRACKING)

STATUSES: tuple[str, ...] = ("proposed", "rejected", "training", "failed", "patched", "gave_up", "trained")

Doc = dict[str, Any]
# Documents a batched replay keeps in memory between flushes before it starts over (bounds its memory).
_MAX_CACHED_DOCS = 20_000


def bench_mean(benchmarks: Mapping[str, float]) -> float | None:
    values = [float(v) for v in benchmarks.values() if math.isfinite(float(v))]
    return sum(values) / len(values) if values else None


def _finite(value: float) -> float | None:
    # BSON stores NaN, but NaN != NaN breaks sorting and equality-based digests: keep None instead.
    return value if math.isfinite(value) else None


class Projector:
    """Applies events to the MongoDB projection; ``apply`` is idempotent and resumable (see module doc)."""

    def __init__(self, db: Database, name: str = "memory") -> None:
        self.db = db
        self.name = name
        self.tracking: Collection = db[TRACKING]
        self._last_seq: int | None = None
        # (collection, _id) → document, while apply_all batches writes; None: every write goes straight out.
        self._batch: dict[tuple[str, str], Doc] | None = None
        self._batch_size = 1
        self._dirty: set[tuple[str, str]] = set()
        # While batched after a drop: the documents written so far (any other does not exist yet).
        self._fresh = False
        self._written: set[tuple[str, str]] = set()
        self._tracked: Doc = {}
        self._handlers: dict[type[Event], Callable[[Any, int], None]] = {
            CampaignStarted: self._campaign_started,
            CampaignStopped: self._campaign_stopped,
            ProposalCreated: self._proposal_created,
            ProposalRejected: self._proposal_rejected,
            TrainStarted: self._train_started,
            TrainFailed: self._train_failed,
            DebugPatched: self._debug_patched,
            DebugGaveUp: self._debug_gave_up,
            TrainSucceeded: self._train_succeeded,
            AnalysisCreated: self._analysis_created,
            JudgeScored: self._judge_scored,
            FitnessComputed: self._fitness_computed,
            ReplicateRequested: self._replicate_requested,
            ReplicateTrained: self._replicate_trained,
            BaselineMeasured: self._baseline_measured,
            CognitionAdded: self._cognition_added,
            MoveLearned: self._move_learned,
        }

    # --- tracking ---------------------------------------------------------------------------------------------

    def last_seq(self) -> int:
        """The last sequence applied. Read once, then kept in memory: this projector is the only writer."""
        if self._last_seq is None:
            doc = self.tracking.find_one({"_id": self.name})
            self._last_seq = int(doc["seq"]) if doc else 0
        return self._last_seq

    def drop(self) -> None:
        """Drop the projection (before a replay) and forget the cached position."""
        drop_all(self.db)
        self._last_seq = None

    def apply(self, event: Event, seq: int) -> bool:
        """Project one event; False when ``seq`` was already applied (a redelivery or a replayed prefix)."""
        if seq <= 0:
            raise ValueError(f"stream sequences start at 1, got {seq}")
        if seq <= self.last_seq():
            return False
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event, seq)
        self._tracked = {"seq": seq, "event_id": event.event_id, "type": type(event).type_tag()}
        if self._batch is None:
            self._write_tracking()
        self._last_seq = seq
        return True

    def _write_tracking(self) -> None:
        if self._tracked:
            _guarded_write(self.tracking, self.name, self._tracked["seq"], {"$set": self._tracked})

    def apply_all(self, events: Iterable[tuple[int, Event]], batch: int = 1, *, fresh: bool = False) -> int:
        """Apply ``(seq, event)`` pairs in order; returns how many were new.

        With ``batch > 1`` (a replay) documents are kept in memory and written once per ``batch`` events, documents
        first and tracking last, so a crash mid-batch leaves tracking behind and the redelivery finishes the job.
        ``fresh``: the projection is empty (just dropped), so a document this projector has not written yet does
        not exist and is not looked up. Inside ``batched`` the block's batch goes on across calls.
        """
        if self._batch is not None:
            return self._apply_batched(events, self._batch_size)
        with self.batched(batch, fresh=fresh) if batch > 1 else contextlib.nullcontext():
            return self._apply_batched(events, batch)

    @contextlib.contextmanager
    def batched(self, batch: int, *, fresh: bool = False) -> Iterator[None]:
        """Batch writes, and keep the documents read and written in memory, until the block ends (a replay in
        chunks: the documents a chunk reads were often written by an earlier one)."""
        self._batch, self._batch_size, self._fresh, self._written = {}, batch, fresh, set()
        try:
            yield
            self._flush()
        finally:
            self._batch, self._dirty, self._fresh, self._written = None, set(), False, set()

    def _apply_batched(self, events: Iterable[tuple[int, Event]], batch: int) -> int:
        applied, pending = 0, 0
        for seq, event in events:
            if self.apply(event, seq):
                applied, pending = applied + 1, pending + 1
            if pending >= batch:
                self._flush()
                pending = 0
        self._flush()
        return applied

    # --- storage: straight through, or batched for a replay -------------------------------------------------

    def _get(self, collection: str, doc_id: str) -> Doc | None:
        if self._batch is None:
            return self.db[collection].find_one({"_id": doc_id})
        key = (collection, doc_id)
        if key not in self._batch:
            if self._fresh and key not in self._written:
                return None
            doc = self.db[collection].find_one({"_id": doc_id})
            if doc is None:
                return None
            self._batch[key] = doc
        return self._batch[key]

    def _put(self, collection: str, doc_id: str, seq: int, fields: Doc, *, create: bool = True,
             current: Doc | None = None) -> None:
        """Merge top-level ``fields`` into a document unless it already reflects ``seq`` and write it whole.

        Whole documents, not ``$set``: nx-27017 turns a ``$set`` datetime into a string and rounds a ``$set`` float
        to 15 digits, while a replaced document round-trips exactly (as on MongoDB). ``create=False``: only change
        an existing document. ``current``: the document as just read, to save a round trip.
        """
        doc = current if current is not None else self._get(collection, doc_id)
        if doc is None:
            if not create:
                return
            doc = {"_id": doc_id, "_seq": 0}
        if doc.get("_seq", 0) >= seq:
            return
        doc = {**doc, **fields, "_id": doc_id, "_seq": seq}
        if self._batch is None:
            _replace_guarded(self.db[collection], doc, upsert=create)
        else:
            self._batch[(collection, doc_id)] = doc
            self._dirty.add((collection, doc_id))

    def _delete(self, collection: str, doc_id: str, seq: int) -> None:
        """Remove a document unless a later event wrote it (guarded like every write)."""
        if self._batch is not None:
            self._batch.pop((collection, doc_id), None)
            self._dirty.discard((collection, doc_id))
        self.db[collection].delete_one({"_id": doc_id, "_seq": {"$lt": seq}})

    def _flush(self) -> None:
        if self._batch is None:
            return
        by_collection: dict[str, list[ReplaceOne]] = {}
        self._written |= self._dirty
        for collection, doc_id in sorted(self._dirty):
            doc = self._batch[(collection, doc_id)]
            guard = {"_id": doc_id, "_seq": {"$lt": doc["_seq"]}}
            by_collection.setdefault(collection, []).append(ReplaceOne(guard, doc, upsert=True))
        for collection, writes in by_collection.items():
            try:
                self.db[collection].bulk_write(writes, ordered=False)
            except BulkWriteError as exc:
                # A duplicate key is a document already at or past this state (written before a crash): fine.
                if any(error.get("code") != 11000 for error in exc.details.get("writeErrors", [])):
                    raise
        self._dirty.clear()
        self._write_tracking()
        if len(self._batch) > _MAX_CACHED_DOCS:
            self._batch.clear()

    # --- helpers ----------------------------------------------------------------------------------------------

    def _experiment(self, event: Event, seq: int) -> Doc | None:
        """The experiment's current document (a fresh one if unseen), or None when ``seq`` is already in it."""
        doc = self._get(EXPERIMENTS, event.experiment_id)
        if doc is None:
            return _new_experiment(event)
        return None if doc.get("_seq", 0) >= seq else doc

    def _update_experiment(self, event: Event, seq: int, change: Callable[[Doc], Doc]) -> None:
        if not event.experiment_id:
            log.warning("%s without experiment_id: nothing to project", type(event).type_tag())
            return
        doc = self._experiment(event, seq)
        if doc is not None:
            fields = {**change(doc), "updated_at": event.occurred_at}
            self._put(EXPERIMENTS, event.experiment_id, seq, fields, current=doc)

    def _update_failure(self, failure_id: str, seq: int, fields: Doc) -> None:
        """Change an existing failure document; no-op when it is missing or already has ``seq``."""
        self._put(FAILURES, failure_id, seq, fields, create=False)

    # --- campaigns --------------------------------------------------------------------------------------------

    def _campaign_started(self, event: CampaignStarted, seq: int) -> None:
        fields = {
            "status": "running", "profile": event.profile, "llm_model": event.llm_model, "seed": event.seed,
            "research": event.research, "control": event.control,
            "budget": {"experiments": event.budget.experiments, "gpu_hours": event.budget.gpu_hours,
                       "cpu_hours": event.budget.cpu_hours},
            "started_at": event.occurred_at, "stopped_at": None, "stop_reason": None,
        }
        self._put(CAMPAIGNS, event.campaign_id, seq, fields)

    def _campaign_stopped(self, event: CampaignStopped, seq: int) -> None:
        current = self._get(CAMPAIGNS, event.campaign_id)
        if current is not None and current.get("status") == "stopped":
            return  # a campaign stops once: a repeated stop keeps the first one's time and reason
        fields = {"status": "stopped", "stopped_at": event.occurred_at, "stop_reason": event.reason}
        self._put(CAMPAIGNS, event.campaign_id, seq, fields)

    # --- proposals --------------------------------------------------------------------------------------------

    def _proposal_created(self, event: ProposalCreated, seq: int) -> None:
        parent_code, parent_moves = "", []
        if event.parent_ids:
            parent = self._get(EXPERIMENTS, event.parent_ids[0])
            parent_code = (parent or {}).get("code") or ""
            parent_moves = (parent or {}).get("moves_in_line") or []
            if parent is not None:
                # Kept on the parent so UCB reads its visit count with the ranking instead of scanning every
                # experiment's parents per request (seconds at 10 k experiments). The seq guard keeps it exact.
                self._put(EXPERIMENTS, parent["_id"], seq, {"n_children": parent.get("n_children", 0) + 1},
                          create=False, current=parent)
        version = _code_version(1, "proposal", 0, event.code, unified_diff(parent_code, event.code), "", event)
        llm = event.llm
        fields = {
            "name": event.name, "motivation": event.motivation, "parent_ids": list(event.parent_ids),
            "cognition_ids": list(event.cognition_ids), "status": "proposed", "code": event.code,
            "code_versions": [version], "created_at": event.occurred_at, "move": event.move, "island": event.island,
            # The library moves made along its first-parent line, its own last: a move already made there is not
            # drawn for it again (a learned move has no pattern saying whether a parent has it).
            "moves_in_line": [*parent_moves, *([event.move] if event.move not in NOT_LIBRARY_MOVES else [])],
        }
        self._update_experiment(event, seq, lambda doc: {**fields, "llm": _add_llm(doc.get("llm"), llm)})

    def _proposal_rejected(self, event: ProposalRejected, seq: int) -> None:
        rejection = {"reason": event.reason, "detail": event.detail, "at": event.occurred_at,
                     "parent_ids": list(event.parent_ids)}

        def change(doc: Doc) -> Doc:
            fields: Doc = {"status": "rejected", "rejection": rejection, "finished_at": event.occurred_at,
                           "llm": _add_llm(doc.get("llm"), event.llm)}
            if event.code and not doc.get("code"):  # a draft the researcher never published: kept to be read
                # Its parent stays under the rejection: a draft that never ran is nobody's child.
                fields |= {"name": event.name, "motivation": event.motivation, "code": event.code}
            if event.move and not doc.get("move"):
                fields["move"] = event.move
            return fields

        self._update_experiment(event, seq, change)

    # --- training and debugging -------------------------------------------------------------------------------

    def _train_started(self, event: TrainStarted, seq: int) -> None:
        def change(doc: Doc) -> Doc:
            fields: Doc = {"status": "training", "attempts": max(doc.get("attempts", 0), event.attempt),
                           "worker_host": event.worker_host, "device": event.device}
            if event.profile:
                fields["profile"] = event.profile
            if doc.get("started_at") is None:
                fields["started_at"] = event.occurred_at
            return fields

        self._update_experiment(event, seq, change)

    def _train_failed(self, event: TrainFailed, seq: int) -> None:
        failure_id = f"{event.experiment_id}:{event.attempt}"
        failure = {
            "experiment_id": event.experiment_id, "campaign_id": event.campaign_id, "attempt": event.attempt,
            "error_kind": event.error_kind, "message": event.message, "traceback": event.traceback,
            "log_tail": event.log_tail, "code": event.code, "device_seconds": event.device_seconds,
            "worker_host": event.worker_host, "at": event.occurred_at,
            "outcome": "unpatched", "fix": None, "fix_worked": None,
            "signature": error_signature(event.error_kind, event.message, event.traceback),
        }
        self._put(FAILURES, failure_id, seq, failure)
        self._record_fix_outcome(event.experiment_id, event.attempt, seq, worked=False)

        def change(doc: Doc) -> Doc:
            # A failed run reports one device-seconds figure: charge it to the device the attempt started on.
            on_gpu = str(doc.get("device") or "").startswith("cuda")
            seconds = event.device_seconds
            spend = _add_spend(doc.get("spend"), gpu=seconds if on_gpu else 0.0, cpu=0.0 if on_gpu else seconds)
            return {
                "status": "failed", "attempts": max(doc.get("attempts", 0), event.attempt),
                "n_failures": doc.get("n_failures", 0) + 1, "spend": spend,
                "last_error": {"kind": event.error_kind, "message": event.message, "attempt": event.attempt},
            }

        self._update_experiment(event, seq, change)

    def _record_fix_outcome(self, experiment_id: str, attempt: int, seq: int, *, worked: bool) -> None:
        """The training attempt after a patch tells whether the patch fixed the previous failure."""
        previous = self._get(FAILURES, f"{experiment_id}:{attempt - 1}")
        if previous is not None and previous.get("fix") is not None:
            self._update_failure(previous["_id"], seq, {"fix_worked": worked})

    def _debug_patched(self, event: DebugPatched, seq: int) -> None:
        fix = {"attempt": event.attempt, "diagnosis": event.diagnosis, "diff": event.diff, "code": event.code,
               "at": event.occurred_at}
        self._update_failure(f"{event.experiment_id}:{event.attempt - 1}", seq, {"fix": fix, "outcome": "patched"})

        def change(doc: Doc) -> Doc:
            versions = list(doc.get("code_versions") or [])
            diff = event.diff or unified_diff(doc.get("code") or "", event.code)
            versions.append(_code_version(len(versions) + 1, "debug", event.attempt, event.code, diff,
                                          event.diagnosis, event))
            return {"status": "patched", "code": event.code, "code_versions": versions,
                    "n_patches": doc.get("n_patches", 0) + 1, "llm": _add_llm(doc.get("llm"), event.llm)}

        self._update_experiment(event, seq, change)

    def _debug_gave_up(self, event: DebugGaveUp, seq: int) -> None:
        experiment = self._get(EXPERIMENTS, event.experiment_id) or {}
        last_attempt = (experiment.get("last_error") or {}).get("attempt", event.attempts)
        self._update_failure(f"{event.experiment_id}:{last_attempt}", seq, {"outcome": "gave_up"})
        gave_up = {"attempts": event.attempts, "last_error_kind": event.last_error_kind,
                   "last_error": event.last_error}
        self._update_experiment(
            event, seq, lambda doc: {"status": "gave_up", "gave_up": gave_up, "finished_at": event.occurred_at,
                                     "llm": _add_llm(doc.get("llm"), event.llm)}
        )

    def _train_succeeded(self, event: TrainSucceeded, seq: int) -> None:
        self._record_fix_outcome(event.experiment_id, event.attempt, seq, worked=True)
        train = {
            "attempt": event.attempt, "profile": event.profile, "train_loss": _finite(event.train_loss),
            "val_loss": _finite(event.val_loss), "params": event.params, "tokens": event.tokens,
            "tokens_per_s": event.tokens_per_s, "device": event.device, "gpu_seconds": event.gpu_seconds,
            "cpu_core_seconds": event.cpu_core_seconds, "checkpoint_path": event.checkpoint_path,
            "worker_host": event.worker_host,
            "curve": [[p.step, p.tokens, _finite(p.loss)] for p in event.curve],
        }
        benchmarks = {k: float(v) for k, v in sorted(event.benchmarks.items())}
        first_seed = {str(profile_seed(event.profile)): {"val_loss": train["val_loss"], "benchmarks": benchmarks}}

        def change(doc: Doc) -> Doc:
            fields: Doc = {
                "status": "trained", "profile": event.profile, "train": train, "seed_runs": first_seed,
                **over_seeds(first_seed), "attempts": max(doc.get("attempts", 0), event.attempt),
                "finished_at": event.occurred_at,
                "spend": _add_spend(doc.get("spend"), gpu=event.gpu_seconds, cpu=event.cpu_core_seconds),
            }
            if event.behaviour:
                fields["behaviour"] = list(event.behaviour)
            return fields

        self._update_experiment(event, seq, change)

    # --- replicates: the same code on more seeds ------------------------------------------------------------

    def _replicate_requested(self, event: ReplicateRequested, seq: int) -> None:
        replicate = {"seed": event.seed, "status": "requested", "reason": event.reason, "at": event.occurred_at}
        self._update_experiment(event, seq, lambda doc: {"replicate": replicate, "awaiting_replicate": True})

    def _replicate_trained(self, event: ReplicateTrained, seq: int) -> None:
        def change(doc: Doc) -> Doc:
            run: Doc = {"val_loss": _finite(event.val_loss) if event.val_loss is not None else None,
                        "benchmarks": {k: float(v) for k, v in sorted(event.benchmarks.items())}}
            if not event.succeeded:
                run = {"val_loss": None, "benchmarks": {}, "error": f"{event.error_kind}: {event.message}"}
            runs = {**(doc.get("seed_runs") or {}), str(event.seed): run}
            replicate = {**(doc.get("replicate") or {}), "seed": event.seed,
                         "status": "trained" if event.succeeded else "failed", "at": event.occurred_at}
            return {"seed_runs": runs, **over_seeds(runs), "replicate": replicate, "awaiting_replicate": False,
                    "spend": _add_spend(doc.get("spend"), gpu=event.gpu_seconds, cpu=event.cpu_core_seconds)}

        self._update_experiment(event, seq, change)

    # --- results ----------------------------------------------------------------------------------------------

    def _analysis_created(self, event: AnalysisCreated, seq: int) -> None:
        analysis = {"sections": [{"title": s.title, "body": s.body} for s in event.sections],
                    "compared_with": list(event.compared_with), "gallery_path": event.gallery_path,
                    "comparison": [msgspec.to_builtins(row) for row in event.comparison],
                    "signal_tasks": list(event.signal_tasks), "removed_statements": list(event.removed_statements),
                    "at": event.occurred_at}
        self._update_experiment(
            event, seq, lambda doc: {"analysis": analysis, "llm": _add_llm(doc.get("llm"), event.llm)}
        )

    def _judge_scored(self, event: JudgeScored, seq: int) -> None:
        judge = {"performance": event.performance, "innovation": event.innovation, "complexity": event.complexity,
                 "weighted": event.weighted, "rationale": event.rationale, "at": event.occurred_at}
        self._update_experiment(event, seq, lambda doc: {"judge": judge, "llm": _add_llm(doc.get("llm"), event.llm)})

    def _fitness_computed(self, event: FitnessComputed, seq: int) -> None:
        fitness = {"loss_term": event.loss_term, "benchmark_term": event.benchmark_term,
                   "judge_term": event.judge_term, "total": event.total, "event_id": event.event_id}
        self._update_experiment(
            event, seq, lambda doc: {"fitness": fitness, "fitness_total": _finite(event.total), "has_fitness": True}
        )

    # --- facts: measured baselines, the cognition base -----------------------------------------------------------

    def _baseline_measured(self, event: BaselineMeasured, seq: int) -> None:
        run = {"val_loss": _finite(event.val_loss), "train_loss": _finite(event.train_loss),
               "benchmarks": dict(event.benchmarks), "bench_mean": bench_mean(event.benchmarks),
               "tokens": event.tokens, "params": event.params, "device": event.device,
               "measured_at": event.occurred_at, "curve": [[p.step, p.tokens, _finite(p.loss)] for p in event.curve]}
        key = f"{event.profile}/{event.mixer}"
        runs = {**(self._get(BASELINE_MIXERS, key) or {}).get("runs", {}), str(event.seed): run}
        self._put(BASELINE_MIXERS, key, seq, {"profile": event.profile, "mixer": event.mixer, "runs": runs,
                                              **seed_stats(runs)})
        profile = self._get(BASELINES, event.profile) or {}
        # Every mixer's scores are kept on the profile's one document (beside baseline_mixers) because the signal
        # is computed across mixers, and a batched replay can read its own unflushed writes only by _id.
        scores = dict(profile.get("mixer_scores", {}))
        scores[event.mixer] = {**scores.get(event.mixer, {}),
                               str(event.seed): {"val_loss": run["val_loss"], "benchmarks": run["benchmarks"]}}
        fields: Doc = {"profile": event.profile, "mixer_scores": scores, **profile_signal(scores)}
        if event.fitness_reference:
            # A new reference mixer starts over: its seeds are not to be averaged with another mixer's.
            seeds = profile.get("runs", {}) if profile.get("mixer") == event.mixer else {}
            seeds = {**seeds, str(event.seed): run}
            fields |= {"mixer": event.mixer, "runs": seeds, **seed_stats(seeds)}
        self._put(BASELINES, event.profile, seq, fields)

    def _move_learned(self, event: MoveLearned, seq: int) -> None:
        if self._get(MOVES, event.move_id) is not None:
            return  # learned once: a second proposal that found the same move keeps the first one's provenance
        self._put(MOVES, event.move_id, seq, {
            "title": event.title, "rationale": event.rationale, "provenance": event.provenance,
            "steps": [msgspec.to_builtins(step) for step in event.steps], "cognition_ids": list(event.cognition_ids),
            "requires": event.requires, "llm_model": event.llm_model, "campaign_id": event.campaign_id,
            "learned_with": event.experiment_id, "learned_at": event.occurred_at,
        })

    def _cognition_added(self, event: CognitionAdded, seq: int) -> None:
        for removed in event.removed_ids:
            self._delete(COGNITION, removed, seq)
        for doc in event.docs:
            self._put(COGNITION, doc.id, seq, as_document(doc))


def seed_stats(runs: Mapping[str, Doc]) -> Doc:
    """Mean and spread over seeds (the spread is the noise floor); None where fewer than two seeds measured it."""
    losses = [r["val_loss"] for r in runs.values() if r.get("val_loss") is not None]
    benches = [r["bench_mean"] for r in runs.values() if r.get("bench_mean") is not None]
    return {
        "seeds": len(losses), "bench_seeds": len(benches),
        "val_loss_mean": statistics.fmean(losses) if losses else None,
        "val_loss_std": statistics.stdev(losses) if len(losses) > 1 else None,
        "bench_mean": statistics.fmean(benches) if benches else None,
        "bench_std": statistics.stdev(benches) if len(benches) > 1 else None,
    }


def over_seeds(runs: Mapping[str, Doc]) -> Doc:
    """An experiment's results over the seeds it was trained on: the mean val loss and its spread, and each task's
    mean score. A seed that failed (diverged, crashed) has no val loss and is counted in ``failed_seeds``."""
    trained = [r for r in runs.values() if r.get("val_loss") is not None]
    loss = Measured.of(r["val_loss"] for r in trained)
    tasks = sorted({task for r in trained for task in r.get("benchmarks", {})})
    benchmarks = {task: statistics.fmean(r["benchmarks"][task] for r in trained if task in r["benchmarks"])
                  for task in tasks}
    return {"val_loss": loss.mean if loss else None, "val_loss_sd": loss.sd if loss else None,
            "seeds": loss.seeds if loss else 0, "failed_seeds": len(runs) - len(trained),
            "benchmarks": benchmarks, "bench_mean": bench_mean(benchmarks)}


def profile_signal(scores: Mapping[str, Mapping[str, Doc]]) -> Doc:
    """What the baselines measured at a profile tell apart (shared/noise.py): the seed noise of the val loss, the
    best baseline, and the benchmark tasks that carry signal, with the numbers that decided each."""
    losses = {mixer: [r["val_loss"] for r in seeds.values() if r.get("val_loss") is not None]
              for mixer, seeds in scores.items()}
    measured = {mixer: m for mixer, values in losses.items() if (m := Measured.of(values)) is not None}
    best = best_of(measured)
    signal = task_signal({mixer: {seed: r.get("benchmarks", {}) for seed, r in seeds.items()}
                          for mixer, seeds in scores.items()})
    return {
        "noise_sd": pooled_sd(losses.values()),
        "best": None if best is None else {"mixer": best, **asdict(measured[best])},
        "signal": {task: {**asdict(s), "reason": s.reason()} for task, s in signal.items()},
        "signal_tasks": [task for task, s in signal.items() if s.counts],
    }


# --- document builders --------------------------------------------------------------------------------------------


def _new_experiment(event: Event) -> Doc:
    """Defaults for an experiment first seen with ``event`` (usually its proposal; a baseline run has none)."""
    return {
        "_id": event.experiment_id, "_seq": 0, "campaign_id": event.campaign_id, "name": "", "motivation": "",
        "parent_ids": [], "cognition_ids": [], "status": "proposed", "code": "", "code_versions": [], "move": "",
        "island": NO_ISLAND,
        "moves_in_line": [],
        "attempts": 0, "n_failures": 0, "n_patches": 0, "n_children": 0, "profile": "", "last_error": None,
        "rejection": None,
        "gave_up": None, "train": None, "val_loss": None, "val_loss_sd": None, "seeds": 0, "seed_runs": {},
        "replicate": None, "awaiting_replicate": False, "benchmarks": {}, "bench_mean": None, "analysis": None,
        "judge": None, "fitness": None, "fitness_total": None, "has_fitness": False,
        "spend": {"gpu_seconds": 0.0, "cpu_core_seconds": 0.0}, "llm": _llm(None),
        "created_at": event.occurred_at, "started_at": None, "finished_at": None,
    }


def _code_version(version: int, source: str, attempt: int, code: str, diff: str, diagnosis: str, event: Event) -> Doc:
    return {"version": version, "source": source, "attempt": attempt, "code": code, "diff": diff,
            "diagnosis": diagnosis, "event_id": event.event_id, "at": event.occurred_at}


def _llm(usage: Any) -> Doc:
    if usage is None:
        return {"model": "", "prompt_tokens": 0, "completion_tokens": 0, "calls": 0}
    return {"model": usage.model, "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens, "calls": 1}


def _add_llm(current: Doc | None, usage: Any) -> Doc:
    """LLM usage summed over every call made for the experiment (proposal, patches, analysis, judging)."""
    total = dict(current or _llm(None))
    if usage is not None:
        total["model"] = total.get("model") or usage.model
        total["prompt_tokens"] = total.get("prompt_tokens", 0) + usage.prompt_tokens
        total["completion_tokens"] = total.get("completion_tokens", 0) + usage.completion_tokens
        total["calls"] = total.get("calls", 0) + 1
    return total


def _add_spend(current: Doc | None, gpu: float = 0.0, cpu: float = 0.0) -> Doc:
    spend = dict(current or {"gpu_seconds": 0.0, "cpu_core_seconds": 0.0})
    spend["gpu_seconds"] = float(spend.get("gpu_seconds", 0.0)) + gpu
    spend["cpu_core_seconds"] = float(spend.get("cpu_core_seconds", 0.0)) + cpu
    return spend


def _replace_guarded(collection: Collection, doc: Doc, *, upsert: bool) -> None:
    """Replace the document unless the stored one already has ``_seq`` at or past ``doc["_seq"]``."""
    guard = {"_id": doc["_id"], "_seq": {"$lt": doc["_seq"]}}
    # An upsert that misses the guard collides on _id: the stored document is already at or past this state.
    with contextlib.suppress(DuplicateKeyError):
        collection.replace_one(guard, doc, upsert=upsert)


def _guarded_write(collection: Collection, doc_id: str, seq: int, update: Doc) -> bool:
    """Upsert ``doc_id`` unless it already reflects ``seq``; True when written."""
    update = {**update, "$set": {**update.get("$set", {}), "_seq": seq}}
    try:
        result = collection.update_one({"_id": doc_id, "_seq": {"$lt": seq}}, update, upsert=True)
    except DuplicateKeyError:
        # The document exists with _seq >= seq, so the guard did not match and the upsert collided: already applied.
        return False
    return result.upserted_id is not None or result.modified_count > 0 or result.matched_count > 0


# --- replay support -----------------------------------------------------------------------------------------------


def drop_all(db: Database, collections: Iterable[str] = PROJECTED_COLLECTIONS) -> None:
    """Drop the event-derived collections (all of them: every one is rebuilt from the log)."""
    for name in collections:
        db.drop_collection(name)


def _canonical(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        # Both servers keep milliseconds; a client may hand back naive or aware datetimes.
        aware = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return aware.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        return repr(value)
    return value


def collection_digest(collection: Collection) -> str:
    hasher = hashlib.sha256()
    for doc in collection.find().sort("_id", 1):
        hasher.update(json.dumps(_canonical(doc), sort_keys=True, separators=(",", ":")).encode())
        hasher.update(b"\n")
    return hasher.hexdigest()


def digest(db: Database, collections: Iterable[str] = PROJECTED_COLLECTIONS) -> dict[str, str]:
    """sha256 of each collection's documents in ``_id`` order, in canonical JSON."""
    return {name: collection_digest(db[name]) for name in collections}
