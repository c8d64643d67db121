"""One fixed instance of every event type: the golden payloads are these, encoded."""

from __future__ import annotations

import datetime as dt

from shared.events import (
    AnalysisCreated,
    AnalysisCreatedV1,
    BaselineMeasured,
    BaselineMeasuredV1,
    Budget,
    CampaignStarted,
    CampaignStartedV1,
    CampaignStartedV2,
    CampaignStopped,
    ChatMessage,
    ChatTurn,
    CognitionAdded,
    CognitionDoc,
    ComparisonRow,
    CurvePoint,
    DeadLettered,
    DebugGaveUp,
    DebugPatched,
    Event,
    FitnessComputed,
    JudgeScored,
    LlmUsage,
    MoveLearned,
    MoveStep,
    ProposalCreated,
    ProposalCreatedV1,
    ProposalCreatedV2,
    ProposalRejected,
    ReplicateRequested,
    ReplicateTrained,
    ReportSection,
    TrainFailed,
    TrainStarted,
    TrainSucceeded,
    TrajectoryRecorded,
)

AT = dt.datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)


def envelope(n: int, experiment: str = "exp-1") -> dict[str, object]:
    return {
        "event_id": f"{n:032x}", "occurred_at": AT, "producer": "test", "campaign_id": "camp-1",
        "experiment_id": experiment, "correlation_id": "corr-1", "causation_id": f"{n - 1:032x}" if n > 1 else "",
    }


CODE = "import torch\n\nclass Mixer(torch.nn.Module):\n    pass\n"
LLM = LlmUsage(model="qwen2.5-coder-0.5b", prompt_tokens=812, completion_tokens=344, latency_s=6.25)

SAMPLES: list[Event] = [
    CampaignStarted(**envelope(1, ""), profile="smoke", budget=Budget(experiments=20, gpu_hours=0.0, cpu_hours=2.5),
                    llm_model="qwen2.5-coder-0.5b", seed=7, research=True, control=True),
    ProposalCreated(**envelope(2), name="gated-delta-mix", motivation="Gate the delta rule per head.", code=CODE,
                    profile="smoke", move="output-gate", parent_ids=("exp-0",), cognition_ids=("cog-deltanet",),
                    llm=LLM),
    ProposalRejected(**envelope(3), reason="duplicate", detail="cosine 0.97 to exp-0"),
    TrajectoryRecorded(**envelope(19), agent="researcher", of_event=f"{2:032x}", outcome="proposal.created.v3",
                       model="qwen2.5-coder-0.5b", turns=(
                           ChatTurn(shared=0, messages=(ChatMessage(role="system", content="You design mixers."),
                                                        ChatMessage(role="user", content="Propose one.")),
                                    reply='{"name": "gated"}', json=True),
                           ChatTurn(shared=3, messages=(ChatMessage(role="user", content="Now the code."),),
                                    reply="```python\nclass Mixer: ...\n```"))),
    MoveLearned(**envelope(18), move_id="learned-0123456789", title="Decay the state per channel",
                rationale="A per-channel decay forgets stale keys at their own rate.", provenance="cognition:cog-gla",
                steps=(MoveStep(site="__init__", anchor="end", instruction="Add self.decay = nn.Linear(d, d)."),
                       MoveStep(site="forward", anchor="return", instruction="Scale the state by the decay.")),
                cognition_ids=("cog-gla",), requires="self\\.state", llm_model="qwen2.5-coder-0.5b"),
    TrainStarted(**envelope(4), attempt=1, worker_host="ws-1", device="cpu", profile="smoke"),
    TrainFailed(**envelope(5), attempt=1, error_kind="nan", message="loss is NaN at step 12",
                traceback="Traceback (most recent call last):\n  ...\n", log_tail="step 12 loss nan", code=CODE,
                device="cpu", device_seconds=3.5, worker_host="ws-1"),
    DebugPatched(**envelope(6), attempt=2, diagnosis="exp overflow; clamp the gate", code=CODE,
                 diff="--- a\n+++ b\n@@ -1 +1 @@\n-x\n+y\n", llm=LLM),
    TrainSucceeded(**envelope(7), attempt=2, profile="smoke",
                   curve=(CurvePoint(step=0, tokens=0, loss=5.5), CurvePoint(step=10, tokens=20480, loss=3.25)),
                   train_loss=3.25, val_loss=3.5, benchmarks={"lambada": 0.125, "mqar": 0.5}, params=1_048_576,
                   tokens=204_800, tokens_per_s=12_000.5, device="cpu", gpu_seconds=0.0, cpu_core_seconds=34.0,
                   checkpoint_path="runs/exp-1/ckpt.pt", worker_host="ws-1"),
    DebugGaveUp(**envelope(8, "exp-2"), attempts=3, last_error_kind="timeout", last_error="ran past 600 s"),
    AnalysisCreated(**envelope(9), sections=(ReportSection(title="What worked", body="The gate."),),
                    compared_with=("exp-0",), gallery_path="gallery/exp-1", llm=LLM,
                    comparison=(ComparisonRow(role="this run", id="exp-1", name="gated", val_loss=3.5,
                                              tasks={"mqar": 0.5}),
                                ComparisonRow(role="parent", id="baseline:deltanet", name="deltanet", val_loss=3.6,
                                              val_loss_sd=0.01, seeds=2, tasks={"mqar": 0.4}, run_is="better")),
                    signal_tasks=("mqar",), removed_statements=("It did not introduce any new features.",)),
    JudgeScored(**envelope(10), performance=6, innovation=7, complexity=5, weighted=5.8, rationale="Solid.",
                llm=LLM),
    FitnessComputed(**envelope(11), loss_term=0.6, benchmark_term=0.55, judge_term=0.53, total=1.68),
    CampaignStopped(**envelope(12, ""), reason="budget reached"),
    DeadLettered(**envelope(13), original_subject="asiarch.train.failed", original_payload=b"\x00not json",
                 consumer="debugger", deliveries=5, error="undecodable event"),
    BaselineMeasured(**envelope(14, ""), profile="smoke", mixer="deltanet", seed=1, val_loss=4.9581,
                     benchmarks={"mqar": 0.31, "piqa": 0.525}, tokens=204_800, device="cpu", params=1_048_576,
                     train_loss=5.01, fitness_reference=True,
                     curve=(CurvePoint(step=0, tokens=0, loss=5.5), CurvePoint(step=10, tokens=20480, loss=5.0))),
    CognitionAdded(**envelope(15, ""), source="notes/delta.md", docs=(
        CognitionDoc(id="doc:0123456789abcdef:0", kind="document", source="notes/delta.md", title="Delta rule",
                     text="The delta rule writes the error.",
                     retrieval_text="Delta rule\nThe delta rule writes the error.", page=3, chunk=0),
        CognitionDoc(id="starter:deltanet", kind="starter", source="starter/entries.jsonl", title="DeltaNet",
                     text="# DeltaNet", retrieval_text="DeltaNet. Memory overwrites.", insight="Overwrite, not add.",
                     symptoms="Memory overwrites.", background="Fast weights.", idea="Delta rule.",
                     implementation="Chunked WY form.", tags=("recall",)),
    ), removed_ids=("doc:0123456789abcdef:1",)),
    ReplicateRequested(**envelope(16), profile="smoke", code=CODE, seed=1,
                       reason="entered the top 3 (rank 1) on one seed"),
    ReplicateTrained(**envelope(17), seed=1, profile="smoke", succeeded=True, val_loss=3.52, train_loss=3.3,
                     benchmarks={"mqar": 0.48}, curve=(CurvePoint(step=10, tokens=20480, loss=3.3),), tokens=204_800,
                     device="cpu", cpu_core_seconds=33.0, wall_seconds=35.5, worker_host="ws-1"),
]

# Each legacy version, as a stream written before its successor holds it; they decode to current types.
LEGACY_SAMPLES: list[Event] = [
    CampaignStartedV2(**envelope(1, ""), profile="smoke", budget=Budget(experiments=20, gpu_hours=0.0, cpu_hours=2.5),
                      llm_model="qwen2.5-coder-0.5b", seed=7, research=False),
    CampaignStartedV1(**envelope(1, ""), profile="smoke", budget=Budget(experiments=20, gpu_hours=0.0, cpu_hours=2.5),
                      llm_model="qwen2.5-coder-0.5b", seed=7),
    AnalysisCreatedV1(**envelope(9), sections=(ReportSection(title="What worked", body="The gate."),),
                      compared_with=("exp-0",), gallery_path="gallery/exp-1", llm=LLM),
    BaselineMeasuredV1(**envelope(14, ""), profile="smoke", mixer="deltanet", seed=1, val_loss=4.9581,
                       benchmarks={"mqar": 0.31, "piqa": 0.525}, tokens=204_800, device="cpu", params=1_048_576,
                       train_loss=5.01, fitness_reference=True),
    ProposalCreatedV1(**envelope(2), name="gated-delta-mix", motivation="Gate the delta rule per head.", code=CODE,
                      parent_ids=("exp-0",), cognition_ids=("cog-deltanet",), llm=LLM),
    ProposalCreatedV2(**envelope(2), name="gated-delta-mix", motivation="Gate the delta rule per head.", code=CODE,
                      profile="smoke", parent_ids=("exp-0",), cognition_ids=("cog-deltanet",), llm=LLM),
]
