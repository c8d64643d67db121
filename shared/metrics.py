"""Every Prometheus metric of the project, defined once.

Each service process imports this module and serves ``/metrics`` from the default registry; the ``service`` label
says which process counted. Labels are bounded: service, event type, outcome, reason, kind — never an id.
Dashboards and alert rules in ``ops/`` query these names.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# --- bus and handlers -----------------------------------------------------------------------------------------------
EVENTS_HANDLED = Counter(
    "asiarch_events_handled_total",
    "Events a consumer finished, by outcome (ok, duplicate, retry, waiting, dead_lettered).",
    ["service", "event", "outcome"],
)
HANDLER_SECONDS = Histogram(
    "asiarch_handler_seconds",
    "Wall time of one handler call.",
    ["service", "event"],
    buckets=(0.005, 0.02, 0.1, 0.5, 2, 10, 60, 300, 1800, 7200),
)
EVENTS_PUBLISHED = Counter("asiarch_events_published_total", "Events published.", ["service", "event"])
DEAD_LETTERED = Counter(
    "asiarch_dead_lettered_total", "Messages moved to the dead-letter subjects.", ["service", "subject"]
)
CONSUMER_PENDING = Gauge(
    "asiarch_consumer_pending", "Messages in the stream not yet delivered to the service's consumer.", ["service"]
)
CONSUMER_ACK_PENDING = Gauge(
    "asiarch_consumer_ack_pending", "Messages delivered to the service's consumer and not yet acked.", ["service"]
)
SERVICE_READY = Gauge("asiarch_service_ready", "1 when the service's NATS connection and store answer.", ["service"])

# --- campaign and experiments ---------------------------------------------------------------------------------------
# A count, not a flag per campaign: one campaign stopping leaves the others counted, and no id becomes a label.
CAMPAIGN_RUNNING = Gauge("asiarch_campaign_running", "Campaigns running.", ["service"])
PROPOSALS = Counter("asiarch_proposals_total", "Proposals published by the researcher.", ["service"])
MOVES_LEARNED = Counter("asiarch_moves_learned_total", "Moves added to the library by the researcher.", ["service"])
PROPOSALS_REJECTED = Counter(
    "asiarch_proposals_rejected_total", "Proposals rejected before training, by reason.", ["service", "reason"]
)
TRAIN_RUNS = Counter(
    "asiarch_train_runs_total",
    "Training runs by outcome (succeeded, failed; replicate: a trained run's code on another seed) and error kind.",
    ["service", "outcome", "kind"],
)
EXPERIMENTS_FINISHED = Counter(
    "asiarch_experiments_finished_total", "Experiments that reached an end (trained, gave_up, rejected).",
    ["service", "outcome"],
)
GPU_SECONDS = Counter(
    "asiarch_training_gpu_seconds_total", "GPU seconds spent training, by outcome.", ["service", "outcome"]
)
CPU_CORE_SECONDS = Counter(
    "asiarch_training_cpu_core_seconds_total", "CPU-core seconds spent training, by outcome.", ["service", "outcome"]
)
DEBUG_PATCHES = Counter("asiarch_debug_patches_total", "Patches the debugger published, by attempt.",
                        ["service", "attempt"])
DEBUG_FIXED = Counter(
    "asiarch_debug_fixed_total", "Patched experiments that then trained, by the attempt that fixed them.",
    ["service", "attempt"],
)
DEBUG_GAVE_UP = Counter("asiarch_debug_gave_up_total", "Experiments the debugger gave up on.", ["service"])
DEBUG_TRIALS = Counter(
    "asiarch_debug_trials_total", "Patches the debugger tried in the sandbox before sending, by where they came from "
    "(repair, llm) and what the trial said (passed, further, refused).", ["service", "source", "verdict"],
)
BEST_FITNESS = Gauge("asiarch_best_fitness", "Best composite fitness so far in the campaign.", ["service"])

# --- LLM ------------------------------------------------------------------------------------------------------------
LLM_TOKENS = Counter("asiarch_llm_tokens_total",
                     "LLM tokens, by kind (prompt, completion; prompt_cached: the prompt tokens a server's cache "
                     "had already evaluated).", ["service", "kind"])
LLM_SECONDS = Histogram(
    "asiarch_llm_request_seconds", "Latency of one LLM request.", ["service"],
    buckets=(0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320, 640),
)
LLM_TOKENS_PER_SECOND = Gauge(
    "asiarch_llm_tokens_per_second", "Completion tokens per second of the last LLM request.", ["service"]
)
LLM_FAILURES = Counter("asiarch_llm_failures_total", "LLM requests that failed or gave malformed output.",
                       ["service", "reason"])


# --- zero series ----------------------------------------------------------------------------------------------------
# A labelled series exists only once it is touched; touching the bounded label sets at start-up makes a dashboard
# read 0 ("nothing happened") instead of "no data" ("is it even running?").

TRAIN_OUTCOMES = ("succeeded", "failed", "replicate")
FINISH_OUTCOMES = ("trained", "gave_up", "rejected")


def init_consumer(service: str, subjects: list[str]) -> None:
    for subject in subjects:
        DEAD_LETTERED.labels(service, subject)
    CONSUMER_PENDING.labels(service)
    CONSUMER_ACK_PENDING.labels(service)


def init_engineer(service: str, error_kinds: tuple[str, ...], reasons: tuple[str, ...]) -> None:
    for outcome in TRAIN_OUTCOMES:
        GPU_SECONDS.labels(service, outcome)
        CPU_CORE_SECONDS.labels(service, outcome)
    TRAIN_RUNS.labels(service, "succeeded", "")
    TRAIN_RUNS.labels(service, "replicate", "")
    for kind in error_kinds:
        TRAIN_RUNS.labels(service, "failed", kind)
    for reason in reasons:
        PROPOSALS_REJECTED.labels(service, reason)


def init_researcher(service: str, reasons: tuple[str, ...]) -> None:
    CAMPAIGN_RUNNING.labels(service).set(0)
    PROPOSALS.labels(service)
    MOVES_LEARNED.labels(service)
    for reason in reasons:
        PROPOSALS_REJECTED.labels(service, reason)
    for outcome in FINISH_OUTCOMES:
        EXPERIMENTS_FINISHED.labels(service, outcome)


def init_debugger(service: str, max_attempts: int) -> None:
    DEBUG_GAVE_UP.labels(service)
    for source in ("repair", "llm"):
        for verdict in ("passed", "further", "refused"):
            DEBUG_TRIALS.labels(service, source, verdict)
    for attempt in range(2, max_attempts + 1):
        DEBUG_PATCHES.labels(service, str(attempt))
        DEBUG_FIXED.labels(service, str(attempt))


def init_llm(service: str) -> None:
    LLM_SECONDS.labels(service)
    LLM_TOKENS_PER_SECOND.labels(service)
    for kind in ("prompt", "prompt_cached", "completion"):
        LLM_TOKENS.labels(service, kind)
    for reason in ("malformed", "backend", "proposal"):
        LLM_FAILURES.labels(service, reason)
