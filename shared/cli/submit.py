"""``asiarch submit FILE``: a mixer written by hand enters the loop as a proposal.

It goes where the researcher's proposals go: the engineer's checks and training, the debugger when it fails,
analysis, judging and fitness; once trained it can be drawn as a parent like any other. Its id is derived from the
campaign and the code, so submitting the same file twice proposes it once.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from shared.cli.campaign import CampaignError, all_campaigns, memory_response, publish_events, running_of
from shared.cli.stack import Endpoints
from shared.events import SUBMITTED, ProposalCreated, derived_event_id, utc_now
from shared.mixer.baselines import BASELINES, baseline_of_ref, baseline_ref
from shared.mixer.source import find_mixer, static_problem

PRODUCER = "submit"
MAX_BYTES = 256 * 1024
MIXER_CLASS = re.compile(r"^class\s+Mixer\b", re.MULTILINE)


class SubmitError(CampaignError):
    code = "submit"


@dataclass(frozen=True)
class Submission:
    proposal: ProposalCreated
    warning: str | None  # what the checks will report, found without running it: the debugger's to fix


def read_mixer(path: Path) -> str:
    """The file's text, refused when it cannot be a mixer at all (not text, empty, too large, no ``Mixer``)."""
    if not path.is_file():
        raise SubmitError(f"{path} is not a file")
    if path.stat().st_size > MAX_BYTES:
        raise SubmitError(f"{path} is {path.stat().st_size:,} bytes: a mixer file is at most {MAX_BYTES:,}")
    try:
        code = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SubmitError(f"{path} is not UTF-8 text: {exc}") from exc
    if not code.strip():
        raise SubmitError(f"{path} is empty")
    try:
        tree = ast.parse(code)
    except SyntaxError:
        if MIXER_CLASS.search(code) is None:  # not Python at all (a README, say): nothing to debug
            raise SubmitError(f"{path} is not Python and defines no `class Mixer`") from None
        return code  # a syntax error in a mixer is a bug like any other: the debugger gets it
    if find_mixer(tree) is None:
        raise SubmitError(f"{path} defines no top-level `class Mixer(torch.nn.Module)`: that class is what trains "
                          "(docs/architecture.md, the mixer contract)")
    return code


def motivation_of(code: str, path: Path) -> str:
    """The module's docstring, where it has one: the author's own account of the idea."""
    try:
        docstring = ast.get_docstring(ast.parse(code))
    except SyntaxError:
        docstring = None
    return (docstring or f"Submitted by hand from {path.name}.")[:2000]


def running_campaign(stack: Endpoints, campaign_id: str | None) -> dict[str, object]:
    """The campaign named (it must be running), else the one running; refused when none is."""
    campaigns = all_campaigns(stack)
    if campaign_id is not None:
        found = next((c for c in campaigns if c["_id"] == campaign_id), None)
        if found is None:
            raise SubmitError(f"no campaign {campaign_id!r}")
        if found.get("status") != "running":
            raise SubmitError(f"campaign {campaign_id} is {found.get('status')}: submit to a running one")
        return found
    running = running_of(campaigns)
    if not running:
        raise SubmitError("no campaign is running: start one, e.g. `asiarch campaign start --no-research` to run "
                          "only submitted mixers, or name one with --campaign")
    return running[-1]


def parent_ref(stack: Endpoints, parent: str | None) -> tuple[str, ...]:
    """The parent as a proposal names it: an experiment memory knows, or a built-in baseline (``deltanet`` or
    ``baseline:deltanet``)."""
    if parent is None:
        return ()
    if baseline_of_ref(parent) or parent in BASELINES:
        return (baseline_ref(baseline_of_ref(parent) or parent),)
    if memory_response(stack, f"/experiments/{parent}").status_code == 404:
        raise SubmitError(f"no experiment {parent!r} and no baseline of that name; baselines: "
                          f"{', '.join(sorted(BASELINES))}")
    return (parent,)


def submitted_id(campaign_id: str, code: str) -> str:
    """Short enough for the leaderboard's column, and derived: the same file to the same campaign is one proposal."""
    return "sub-" + hashlib.sha256(f"{campaign_id}\n{code}".encode()).hexdigest()[:12]


def submission(stack: Endpoints, path: Path, campaign_id: str | None, parent: str | None,
               name: str | None) -> Submission:
    code = read_mixer(path)
    campaign = running_campaign(stack, campaign_id)
    experiment_id = submitted_id(str(campaign["_id"]), code)
    proposal = ProposalCreated(
        event_id=derived_event_id(experiment_id, PRODUCER, 0), occurred_at=utc_now(), producer=PRODUCER,
        campaign_id=str(campaign["_id"]), experiment_id=experiment_id, name=name or path.stem,
        motivation=motivation_of(code, path), code=code, profile=str(campaign["profile"]), move=SUBMITTED,
        parent_ids=parent_ref(stack, parent),
    )
    problem = static_problem(code)
    warning = f"{problem.reason}: {problem.detail}" if problem else None
    return Submission(proposal, warning)


def already_known(stack: Endpoints, experiment_id: str) -> bool:
    return memory_response(stack, f"/experiments/{experiment_id}").status_code == 200


def submit(stack: Endpoints, found: Submission) -> int:
    """Publish the proposal; its stream sequence."""
    return asyncio.run(publish_events(stack.nats_url, found.proposal))[0]
