"""One proposal: pick a parent, gather context from memory, ask the LLM, repair, check, de-duplicate.

The outcome is one event: ``proposal.created`` with runnable-looking code, or ``proposal.rejected`` with the
reason. Static problems are shown to the LLM for a bounded number of revisions before the proposal is rejected.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import logging
import random
import re
from collections.abc import Awaitable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from services.researcher.crossover import Crossover, crossover
from services.researcher.moves import (
    DEFAULT_EXPLORATION,
    FREE_CHOICE,
    MOVES,
    NEVER_PRESENT,
    Move,
    Step,
    applicable,
    cognition_weighted,
    completed_return,
    fill_slot,
    from_learned,
    learned_move_id,
    restore_cut_tail,
    site_of,
    slot_of,
    ucb_move,
    without_todo,
)
from services.researcher.prompts import (
    ANCHORS,
    IDEA_SCHEMA,
    PROPOSAL_SCHEMA,
    RETRY,
    REVISE,
    STEP,
    STEP_ANSWERS,
    WRITE_CODE,
    invent_messages,
    move_schema,
    proposal_messages,
)
from shared.events import (
    FREE_MOVE,
    NEXT_STEPS_SECTION,
    NO_ISLAND,
    Event,
    LlmUsage,
    MoveLearned,
    MoveStep,
    ProposalCreated,
    ProposalRejected,
    new_event_id,
    utc_now,
)
from shared.llm import LlmClient, add_usage, parse_json_reply
from shared.memory_client import ExperimentBrief, Hit, MemoryClient
from shared.mixer.baselines import baseline_of_ref, baseline_ref
from shared.mixer.edit import (
    editable_functions,
    extract_function,
    for_prompt,
    function_matching,
    function_source,
    merge_functions,
    put_definition,
    repair,
)
from shared.mixer.probe import ProbeOutcome
from shared.mixer.source import (
    StaticProblem,
    code_similarity,
    discarded_results,
    parses,
    static_problem,
    strip_fences,
    unread_assignments,
    unused_attributes,
)

log = logging.getLogger(__name__)
PRODUCER = "researcher"
# Near-duplicates: the code (line-level diff ratio) almost identical, or close with a close motivation (cosine).
SAME_CODE = 0.97
CLOSE_CODE, CLOSE_MOTIVATION = 0.9, 0.92
DUPLICATE_CANDIDATES = 5
# Sampling temperature of a move's steps, by revision: precise first, then wider, to get out of a copy.
STEP_TEMPERATURES = (0.5, 0.8, 1.0)
FREE_TEMPERATURES = (0.7, 0.9, 1.0)  # a whole-file reply starts wider: it has no marked slot to keep it on the change
# Code in a step's instruction: a call, an attribute, an assignment or an arithmetic operator.
CODE_IN_PROSE = re.compile(r"\w\(|\w\.\w|[=*+/@]")
ARTICLES = {"a", "A", "I"}  # words that are also one-letter names
NEW_LAYER = re.compile(r"self\.(\w+)\s*=\s*nn\.")
# The checks' profile when a caller names none (a proposal always names its campaign's).
DEFAULT_CHECK_PROFILE = "smoke"



class BehaviourProbe(Protocol):
    """(draft code, {label: known code}) -> the engineer's checks on the draft at ``check_profile`` (with
    ``checks``), and the label of the known mixer whose outputs it reproduces (``shared.mixer.probe.probe_draft``,
    sandboxed)."""

    def __call__(self, code: str, known: dict[str, str], *, check_profile: str,
                 checks: bool = True) -> Awaitable[ProbeOutcome]: ...


@dataclass(frozen=True)
class FailedCheck(StaticProblem):
    """A draft that fails one of the engineer's checks in the probe: sent back while revisions last, then proposed
    anyway, so the engineer reports it in full and the debugger gets it (it is no copy, and may be one fix away)."""


@dataclass(frozen=True)
class Campaign:
    campaign_id: str
    seed: int
    llm_model: str
    profile: str
    # The control arm: built-in moves drawn uniformly, no analyses or cognition in the prompt, nothing learned.
    control: bool = False


@dataclass(frozen=True)
class ParentContext:
    ref: str  # an experiment id, or "baseline:<name>"
    name: str
    code: str
    motivation: str
    results: str
    analysis: str
    next_steps: str = ""  # what its analysis said to try next
    moves_made: tuple[str, ...] = ()  # the library moves made along its line
    # With a crossover, ``code`` shows the parent with the donor's component in; this is the parent's own code.
    own_code: str = ""

    @property
    def computed(self) -> str:
        """The code whose outputs a draft must not reproduce: the parent's own, whatever the prompt shows."""
        return self.own_code or self.code


@dataclass(frozen=True)
class Idea:
    """What a new move is made from: a cognition entry's design guidance, or an analysis's next steps."""

    title: str
    text: str
    provenance: str
    cognition_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Invention:
    """A move the LLM just wrote, and what writing it cost."""

    move: Move
    usage: LlmUsage


@dataclass(frozen=True)
class Draft:
    name: str
    motivation: str
    code: str


class Proposer:
    """``moves`` empty leaves the choice of the change to the LLM; ``probe`` None skips the behaviour check."""

    def __init__(self, llm: LlmClient, memory: MemoryClient, baselines: dict[str, Path], example: str,
                 revisions: int = 2, moves: Sequence[Move] = MOVES, probe: BehaviourProbe | None = None,
                 invent_share: float = 0.0, exploration: float = DEFAULT_EXPLORATION, free_arm: bool = False,
                 islands: int = 0, migration_every: int = 0, crossover_arm: bool = False) -> None:
        self.llm = llm
        self.memory = memory
        self.baselines = {name: path for name, path in baselines.items() if name != "softmax_attention"}
        self.baseline_sources = [path.read_text() for path in self.baselines.values()]
        self.example = example
        self.revisions = revisions
        self.moves = tuple(moves)
        self.probe = probe
        # The share of proposals that make a new move rather than draw one (all of them when none applies).
        self.invent_share = invent_share
        self.exploration = exploration  # UCB's, over the moves
        self.free_arm = free_arm  # the LLM's own change competes with the moves, by its record for the model
        self.islands, self.migration_every = islands, migration_every  # island sampling (0: off)
        self.crossover_arm = crossover_arm  # porting a reference's component competes with the moves

    async def propose(self, campaign: Campaign, index: int) -> list[Event]:
        """The events of one proposal: ``move.learned`` when it made a new move and the draft passed, then
        ``proposal.created`` or ``proposal.rejected``."""
        if campaign.llm_model:
            self.llm.use_model_in_task(campaign.llm_model)  # each campaign's proposals: its model
        experiment_id = new_event_id()[:16]
        island, migrant = island_for(index, self.islands, self.migration_every)
        sample = await self.memory.sample_parents(campaign.campaign_id, seed=proposal_seed(campaign, index, "parents"),
                                                  island=None if migrant else island, islands=self.islands)
        parent = await self.parent_context(sample.parent, index)
        cognition = [] if campaign.control else await self.memory.search(
            "cognition", parent.analysis or parent.motivation, k=3)
        cognition_ids = tuple(hit.id for hit in cognition)
        offer = None if campaign.control else await self.crossover_offer(parent, sample.references,
                                                                        proposal_seed(campaign, index, "crossover"))
        move, invention = await self.choose_move(campaign, index, parent, cognition, offer)
        parents: tuple[str, ...] = (parent.ref,)
        if offer is not None and move is offer.move:  # the parent with the component in, the donor its 2nd parent
            parent = dataclasses.replace(parent, code=offer.code, own_code=parent.code)
            parents = (parent.ref, offer.donor_ref)
        from_baseline = baseline_of_ref(parent.ref) is not None
        messages = proposal_messages(
            move=move, example_name=None if from_baseline else self.example,
            example_code="" if from_baseline else for_prompt(self.baselines[self.example].read_text()),
            parent_name=parent.name, parent_results=parent.results, parent_motivation=parent.motivation,
            parent_code=for_prompt(parent.code),
            parent_analysis="(not shown)" if campaign.control else parent.analysis or "(not analysed yet)",
            references=describe_references(sample.references),
            cognition="\n".join(f"- {hit.label}" for hit in cognition) or "(none retrieved)",
        )
        # Seeded per campaign and proposal: reproducible, yet a restarted researcher does not replay old samples.
        draft, usage, problem = await self.draft(messages, seed=proposal_seed(campaign, index, "llm"),
                                                 parent=parent, move=move, profile=campaign.profile)
        if isinstance(problem, FailedCheck):  # past its revisions: the engineer reports it, the debugger gets it
            log.info("proposing a draft that fails a check: %s", problem.detail.splitlines()[0])
            problem = None
        if invention is not None:
            usage = add_usage(invention.usage, usage)
        envelope = {"event_id": new_event_id(), "occurred_at": utc_now(), "producer": PRODUCER,
                    "campaign_id": campaign.campaign_id, "experiment_id": experiment_id}
        if problem is None:
            problem = await self.duplicate_problem(draft, parent, campaign.profile)
        move_id = move.id if move is not None else FREE_MOVE
        if problem is not None:
            log.info("proposal rejected (%s): %s", problem.reason, problem.detail)
            return [ProposalRejected(**envelope, reason=problem.reason, detail=problem.detail,  # type: ignore[arg-type]
                                     llm=usage, name=draft.name, motivation=draft.motivation, code=draft.code,
                                     parent_ids=parents, move=move_id)]
        learned = [] if invention is None else [learned_event(invention, {**envelope, "event_id": new_event_id()})]
        return [*learned, ProposalCreated(
            **envelope, name=draft.name, motivation=draft.motivation, code=draft.code, profile=campaign.profile,
            move=move_id, island=island, parent_ids=parents,
            cognition_ids=tuple(dict.fromkeys(cognition_ids + (move.cognition if move else ()))), llm=usage,
        )]

    async def choose_move(self, campaign: Campaign, index: int, parent: ParentContext, cognition: list[Hit],
                          offer: Crossover | None = None) -> tuple[Move | None, Invention | None]:
        """The move to make: none without a library (the LLM chooses); in the control arm a built-in one drawn
        uniformly; else a new one (``invent_share`` of the time, or when none applies) or the library's best by
        UCB over the moves that apply to the parent (and the LLM's own change, with ``free_arm``, and the
        crossover ``offer``), on the records of the campaign's model."""
        seed = proposal_seed(campaign, index, "move")
        if not self.moves:
            return None, None
        if campaign.control:
            return cognition_weighted(applicable(parent.code, self.moves, parent.moves_made), (), seed), None
        known = await self.memory.moves(model=campaign.llm_model or None)
        library = [*self.moves, *(from_learned(entry) for entry in known.learned)]
        candidates = applicable(parent.code, library, parent.moves_made)
        invent = random.Random(proposal_seed(campaign, index, "invent")).random() < self.invent_share
        if self.invent_share > 0 and (invent or not candidates):
            invention = await self.invent(parent, cognition, seed)
            if invention is not None:
                return invention.move, invention
        cognition_ids = tuple(hit.id for hit in cognition)
        arms = [*candidates, *([FREE_CHOICE] if self.free_arm else []), *([offer.move] if offer else [])]
        chosen = ucb_move(arms, known.records, seed, cognition_ids, self.exploration)
        return (None if chosen is FREE_CHOICE else chosen), None

    async def crossover_offer(self, parent: ParentContext, references: list[ExperimentBrief],
                              seed: int) -> Crossover | None:
        """A component of one reference (drawn with the seed) ported into the parent, with ``crossover_arm``;
        while the campaign has ranked no references yet, of a baseline other than the parent (the population it
        starts from). None when the drawn donor has nothing the parent lacks."""
        if not self.crossover_arm:
            return None
        if not references:
            others = [name for name in self.baselines if name != baseline_of_ref(parent.ref)]
            if not others:
                return None
            return self.baseline_crossover(parent, random.Random(seed).choice(others), seed)
        donor = random.Random(seed).choice(references)
        if (name := baseline_of_ref(donor.id)) is not None:  # a baseline ranked among the references
            return self.baseline_crossover(parent, name, seed) if name in self.baselines else None
        found = await self.memory.experiment(donor.id)
        if found is None or not found.experiment.code:
            return None
        return crossover(parent.code, found.experiment.code, donor.name or donor.id, donor.id, seed)

    def baseline_crossover(self, parent: ParentContext, name: str, seed: int) -> Crossover | None:
        return crossover(parent.code, self.baselines[name].read_text(), name, baseline_ref(name), seed)

    def baseline_context(self, name: str, results: str) -> ParentContext:
        return ParentContext(ref=baseline_ref(name), name=name, code=self.baselines[name].read_text(),
                             motivation=f"the {name} baseline", results=results, analysis="")

    async def invent(self, parent: ParentContext, cognition: list[Hit], seed: int) -> Invention | None:
        """A new move for the parent, written by the LLM from one idea (see ``ideas``); None when there is no
        idea to work from or the reply names no function of the parent."""
        ideas = self.ideas(parent, cognition)
        if not ideas:
            return None
        idea = random.Random(seed).choice(ideas)
        shown = for_prompt(parent.code)
        functions = {node.name: is_method for node, is_method in editable_functions(shown)}
        reply = await self.llm.complete_json(
            invent_messages(parent_name=parent.name, parent_code=shown, source_title=idea.title,
                            source_text=idea.text),
            move_schema(list(functions)), max_tokens=400, seed=seed)
        steps = written_steps(reply.data["steps"], functions)
        title = str(reply.data["title"]).strip()
        if not steps or not title:
            return None
        vague = [step.instruction for step in steps if not says_what_to_write(step.instruction, shown, step.site)]
        if vague or not wires_its_layers(steps):  # drafted, it would come back as the parent: the library draws
            log.info("invented move dropped (%s): %s", "a step names no code" if vague else "a layer left unwired",
                     [step.instruction[:120] for step in steps])
            return None
        move = Move(id=learned_move_id(title, steps), title=title, why=str(reply.data["rationale"]).strip(),
                    steps=steps, cognition=idea.cognition_ids, present=NEVER_PRESENT, provenance=idea.provenance)
        return Invention(move, reply.usage)

    @staticmethod
    def ideas(parent: ParentContext, cognition: list[Hit]) -> list[Idea]:
        """What a new move can come from: what the parent's analysis said to try next, and the design guidance
        of the cognition entries retrieved for it."""
        found = [Idea(NEXT_STEPS_SECTION, parent.next_steps, f"analysis:{parent.ref}")] if parent.next_steps else []
        return found + [Idea(hit.label, hit.text, f"cognition:{hit.id}", (hit.id,)) for hit in cognition if hit.text]

    async def draft(self, messages: list[dict[str, str]], seed: int, parent: ParentContext,
                    move: Move | None = None, *, profile: str) -> tuple[Draft, LlmUsage, StaticProblem | None]:
        """The idea (JSON), then the code: a move's steps one function each, or, with no move, the functions the
        LLM chooses to change. Repaired and checked; a static problem, or code that is still the parent's by its
        text or by its outputs, is shown to the LLM up to ``revisions`` times."""
        idea = await self.llm.complete_json(messages, IDEA_SCHEMA, max_tokens=300, seed=seed)
        usages = [idea.usage]
        messages = [*messages, {"role": "assistant", "content": json.dumps(idea.data)}]
        if move is None:
            code, problem = await self.draft_changes(messages, seed, parent, usages, profile)
        else:
            code, problem = await self.draft_steps(messages, seed, parent, move, usages, profile)
        draft = Draft(name=str(idea.data["name"])[:80], motivation=str(idea.data["motivation"]), code=code)
        parse_json_reply(json.dumps(asdict(draft)), PROPOSAL_SCHEMA)  # the assembled proposal keeps the contract
        return draft, add_usage(*usages), problem

    async def draft_changes(self, messages: list[dict[str, str]], seed: int, parent: ParentContext,
                            usages: list[LlmUsage], profile: str) -> tuple[str, StaticProblem | None]:
        """The functions the LLM chose to change, merged into the parent; a problem goes back as a revision.
        A reply that merges into a draft already tried restarts from the parent, said first and sampled wider:
        shown its own answer, a small model hands it back word for word."""
        start = [*messages, {"role": "user", "content": WRITE_CODE}]
        conversation, base = start, for_prompt(parent.code)  # the parent as the prompt showed it
        tried: dict[str, StaticProblem] = {}
        for revision in range(self.revisions + 1):
            text, usage = await self.llm.complete_text(
                conversation, max_tokens=2048, seed=reply_seed(seed, revision, 0),
                temperature=FREE_TEMPERATURES[min(revision, len(FREE_TEMPERATURES) - 1)])
            usages.append(usage)
            code = repair(merge_functions(base, text), donors=[parent.code, *self.baseline_sources])
            repeated = tried.get(code)
            problem = repeated or await self.problem_of(code, parent, None, profile)
            if problem is None:
                break
            tried[code] = problem
            if repeated is not None:
                retry = RETRY.substitute(reason=problem.reason, detail=problem.detail) + WRITE_CODE
                conversation, base = [*messages, {"role": "user", "content": retry}], for_prompt(parent.code)
                continue
            if parses(code):
                base = code  # a revision's functions go into this draft
            conversation = [*conversation, {"role": "assistant", "content": text[:6000]},
                            {"role": "user", "content": REVISE.substitute(reason=problem.reason,
                                                                          detail=problem.detail)}]
        return code, problem

    async def draft_steps(self, messages: list[dict[str, str]], seed: int, parent: ParentContext, move: Move,
                          usages: list[LlmUsage], profile: str) -> tuple[str, StaticProblem | None]:
        """A move written one function per step, each step shown the function as it stands. A problem restarts
        the steps from the parent, said first and sampled wider: a small model keeps to its own last answer."""
        problem: StaticProblem | None = None
        for revision in range(self.revisions + 1):
            code, conversation = for_prompt(parent.code), list(messages)
            for number, step in enumerate(move.steps, start=1):
                target = function_matching(code, step.site)
                if target is None:
                    continue
                name, is_method = target
                shown = function_source(code, name, is_method)
                marked = step.marked(shown)
                ask = STEP.substitute(number=number, steps=len(move.steps), name=name, instruction=step.instruction,
                                      source=marked.rstrip("\n"),
                                      answer=STEP_ANSWERS[slot_of(marked)].substitute(name=name))
                if problem is not None and number == 1:
                    ask = RETRY.substitute(reason=problem.reason, detail=problem.detail) + ask
                conversation.append({"role": "user", "content": ask})
                text, usage = await self.llm.complete_text(
                    conversation, max_tokens=1024, seed=reply_seed(seed, revision, number),
                    temperature=STEP_TEMPERATURES[min(revision, len(STEP_TEMPERATURES) - 1)])
                usages.append(usage)
                conversation.append({"role": "assistant", "content": text[:4000]})
                written = step_written(text, name, shown, marked, step.combine)
                if written is not None:
                    code = put_definition(code, name, written, as_method=is_method)
            code = repair(code, donors=[parent.code, *self.baseline_sources])
            problem = await self.problem_of(code, parent, move, profile)
            if problem is None or not move.steps:  # a crossover with nothing to wire: no reply to ask again
                break
        return code, problem

    async def problem_of(self, code: str, parent: ParentContext, move: Move | None,
                         profile: str) -> StaticProblem | None:
        """Why a draft goes back to the LLM: a static problem, or it still is its parent (a small model often
        hands the parent back; asking again costs one reply, where rejecting throws the idea away too). With the
        probe, outputs decide the latter, and a failed check of the engineer's goes back too; text similarity
        cannot tell a copy (see ``duplicate_problem``)."""
        if self.probe is None:
            return static_problem(code) or parent_copy_problem(code, parent, move)
        return static_problem(code) or await self.probe_problem(code, parent, move, profile)

    async def probe_problem(self, code: str, parent: ParentContext, move: Move | None,
                            profile: str) -> StaticProblem | None:
        """A check of the engineer's that the draft fails (at the profile it will train at), or code that reads
        differently but computes what its parent or a baseline computes: the change never reached ``forward``, or
        it was a rename. Caught here either costs one revision; at the engineer, a training attempt or the
        proposal."""
        if self.probe is None:
            return None
        outcome = await self.probe(code, {f"the parent ({parent.name})": parent.computed},
                                   check_profile=profile or DEFAULT_CHECK_PROFILE)
        if outcome.failed_check:
            return FailedCheck("check", outcome.failed_check)
        if outcome.same_as is None:
            return None
        return StaticProblem("duplicate", f"its outputs equal {outcome.same_as}'s on a fixed input, so your change "
                                          f"is not in the computation yet: {missing_change(code, move)}")

    async def duplicate_problem(self, draft: Draft, parent: ParentContext, profile: str) -> StaticProblem | None:
        """A near-copy of its parent or of a past experiment. Memory's code index finds the candidates; the
        whole files are then compared line by line (embeddings see only the start of a file). With the behaviour
        probe, close text is only the shortlist: one changed line in a long file is still ~98% the same text, so
        a close draft is a copy when it also computes the same."""
        if self.probe is None:  # with a probe, the draft was already held against its parent by its outputs
            problem = parent_copy_problem(draft.code, parent)
            if problem is not None:
                return problem
        candidates = await self.memory.search("code", draft.code, k=DUPLICATE_CANDIDATES)
        if not candidates:
            return None
        motivations = {h.id: h.score for h in await self.memory.search("motivations", draft.motivation, k=10)}
        close: dict[str, str] = {}
        for hit in candidates:
            found = await self.memory.experiment(hit.id)
            if found is None or not found.experiment.code:
                continue
            same = code_similarity(draft.code, found.experiment.code)
            if same >= SAME_CODE or (same >= CLOSE_CODE and motivations.get(hit.id, 0.0) >= CLOSE_MOTIVATION):
                if self.probe is None:
                    return StaticProblem("duplicate", f"{same:.0%} of the code and motivation cosine "
                                                      f"{motivations.get(hit.id, 0.0):.2f} match {hit.id}")
                close[f"experiment {hit.id}"] = found.experiment.code
        if not close or self.probe is None:
            return None
        # The checks ran in ``problem_of`` (a draft still failing one past its revisions goes on as a proposal):
        # its outputs alone decide.
        outcome = await self.probe(draft.code, close, check_profile=profile or DEFAULT_CHECK_PROFILE, checks=False)
        if outcome.same_as is None:
            return None
        return StaticProblem("duplicate", f"its outputs equal {outcome.same_as}'s on a fixed input")

    async def parent_context(self, parent: ExperimentBrief | None, index: int) -> ParentContext:
        if parent is not None and (name := baseline_of_ref(parent.id)) in self.baselines:
            return self.baseline_context(name, f"{results_line(parent)}, a built-in baseline")
        if parent is not None:
            found = await self.memory.experiment(parent.id)
            if found is not None and found.experiment.code:
                e = found.experiment
                sections = e.analysis.sections if e.analysis else []
                analysis = "\n\n".join(f"{s.title}: {s.body}" for s in sections)
                next_steps = next((s.body for s in sections if s.title == NEXT_STEPS_SECTION), "")
                return ParentContext(ref=e.id, name=e.name, code=e.code, motivation=e.motivation,
                                     results=results_line(e), analysis=analysis, next_steps=next_steps,
                                     moves_made=tuple(e.moves_in_line))
        # Nothing ranked yet: start from the baselines in turn, so early proposals explore different families.
        names = sorted(self.baselines)
        name = names[index % len(names)]
        return self.baseline_context(name, "a built-in baseline")


def step_written(reply: str, name: str, shown: str, marked: str, combine: str = "") -> str | None:
    """The function a step's reply makes: the whole function when the reply wrote one (a small model often does,
    whatever it was asked), else the marked function with the reply's lines in its slot (a marked return
    completed by ``completed_return``); None when neither."""
    whole = extract_function(reply, name)
    if whole is not None:
        return restore_cut_tail(shown, without_todo(whole))
    written = completed_return(marked, strip_fences(reply), combine)
    return None if written is None else fill_slot(marked, written)


def island_for(index: int, islands: int, migration_every: int) -> tuple[int, bool]:
    """The island a campaign's ``index``-th proposal joins (round robin), and whether it is a migrant: every
    ``migration_every``-th proposal draws its parent from the whole ranking, so the best of one island seeds
    another (with a period prime to the number of islands, each island receives migrants in turn)."""
    if islands <= 0:
        return NO_ISLAND, False
    return index % islands, migration_every > 0 and (index + 1) % migration_every == 0


def proposal_seed(campaign: Campaign, index: int, purpose: str) -> int:
    """The seed of one random choice (``purpose``) of a campaign's ``index``-th proposal: the same on a re-run,
    unrelated across proposals and purposes (arithmetic on the seeds would make neighbours collide)."""
    digest = hashlib.sha256(f"{campaign.seed}/{index}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def reply_seed(draft_seed: int, revision: int, step: int) -> int:
    """The LLM seed of one reply of a draft (the idea itself is asked with ``draft_seed``)."""
    return proposal_seed(Campaign("", draft_seed, "", ""), revision, f"reply {step}")


def results_line(experiment: ExperimentBrief) -> str:
    """Val loss over seeds and fitness. Not the mean of every benchmark: at the small profiles most of them sit at
    chance, and the fitness already weighs the ones that carry signal."""
    measured = experiment.measured()
    parts = [f"val loss {measured.text()}" if measured is not None else "",
             f"fitness {experiment.fitness:.3f}" if experiment.fitness is not None else ""]
    return ", ".join(p for p in parts if p) or "not measured"


def describe_references(references: list[ExperimentBrief]) -> str:
    if not references:
        return "(none yet)"
    return "\n".join(f"- {r.name}: {results_line(r)}" for r in references)


def parent_copy_problem(code: str, parent: ParentContext, move: Move | None = None) -> StaticProblem | None:
    same = code_similarity(code, parent.computed)
    if same < SAME_CODE:
        return None
    return StaticProblem("duplicate", f"{same:.0%} of the code is the parent's ({parent.name}): "
                                      f"{missing_change(code, move)}")


def missing_change(code: str, move: Move | None) -> str:
    """What to tell a model whose draft still computes its parent: the layers it made but never used, and the
    change it was asked for, again."""
    unused = ", ".join(f"`self.{name}`" for name in unused_attributes(code))
    discarded = ", ".join(discarded_results(code))
    unread = ", ".join(unread_assignments(code))
    told = [f"{unused} is created in __init__ but never used: use it in forward." if unused else "",
            f"{discarded} computes a value that nothing uses: assign it and use it in what forward returns."
            if discarded else "",
            f"{unread} is assigned and never read: use it in what the function returns." if unread else "",
            "Write the change your motivation describes into the code, in forward too."]
    if move is not None:
        told.append(f"The change to make: {move.instruction}")
    return " ".join(t for t in told if t)


def written_steps(replied: list[Any], functions: dict[str, bool]) -> tuple[Step, ...]:
    """The steps of a new move as the LLM wrote them, less any that names no function of the parent (``functions``:
    name -> whether it is a Mixer method) or says nothing; a place outside ``ANCHORS`` becomes the end."""
    steps = []
    for step in replied:
        if not isinstance(step, dict) or step.get("function") not in functions:
            continue
        instruction = str(step.get("instruction") or "").strip()
        if instruction:
            anchor = step.get("where") if step.get("where") in ANCHORS else "end"
            steps.append(Step(site_of(step["function"], functions[step["function"]]), instruction, anchor))
    return tuple(steps)


def says_what_to_write(instruction: str, code: str, site: str) -> bool:
    """Whether a step's instruction names code: a call, an attribute, an operator, or a name the function it
    rewrites uses (``q``, ``beta``, ``self``). "Add a linear cost to the output" says what a change should buy, not
    what to write, and a small model hands the parent back for it."""
    if CODE_IN_PROSE.search(instruction):
        return True
    target = function_matching(code, site)
    if target is None:
        return False
    tree = ast.parse(function_source(code, *target))  # a function of the parsed parent, dedented
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    used |= {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
    return bool((set(re.findall(r"[A-Za-z_]\w*", instruction)) - ARTICLES) & used)


def wires_its_layers(steps: Sequence[Step]) -> bool:
    """Whether every layer a move creates (``self.name = nn.…``) is created in ``__init__`` and used by another of
    its steps: a small model short of an idea parrots the prompt's own example onto ``forward``, or adds a layer
    that nothing calls."""
    for step in steps:
        created = NEW_LAYER.findall(step.instruction)
        if created and step.site != "__init__":
            return False
        if any(not any(f"self.{name}" in other.instruction for other in steps if other is not step)
               for name in created):
            return False
    return True


def learned_event(invention: Invention, envelope: dict[str, object]) -> MoveLearned:
    move = invention.move
    return MoveLearned(**envelope, move_id=move.id, title=move.title, rationale=move.why,  # type: ignore[arg-type]
                       provenance=move.provenance, cognition_ids=move.cognition, requires=move.requires,
                       steps=tuple(MoveStep(site=s.site, anchor=s.anchor, instruction=s.instruction)
                                   for s in move.steps),
                       llm_model=invention.usage.model)
