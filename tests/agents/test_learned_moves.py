"""The move library grows and is drawn by record: a new move from a cognition entry or an analysis, published once
a proposal made with it passed; each move's record in memory; UCB over the moves; the control arm."""

from __future__ import annotations

import dataclasses

import msgspec

from services.memory.cognition import cognition_events, starter_update
from services.researcher.crossover import components, crossover
from services.researcher.moves import (
    FREE_CHOICE,
    MOVES,
    NEVER_PRESENT,
    Step,
    applicable,
    from_learned,
    ucb_move,
)
from services.researcher.proposer import Campaign, ParentContext, Proposer, says_what_to_write, wires_its_layers
from shared.events import (
    CROSSOVER_MOVE,
    FREE_MOVE,
    Event,
    FitnessComputed,
    LlmUsage,
    MoveLearned,
    MoveStep,
    ProposalCreated,
    ProposalRejected,
)
from shared.memory_client import LearnedMove, MoveRecord
from shared.memory_client import MoveStep as MemoryStep
from shared.mixer.baselines import BASELINES
from shared.mixer.source import undefined_names
from tests.agents.conftest import MemoryWorld, scripted
from tests.agents.lineage import baselines, child, envelope
from tests.agents.test_researcher import (
    CONV_FORWARD,
    CONV_INIT,
    GOOD_CODE,
    LINEAR,
    LINEAR_INDEX,
    SANDBOXED_PROBE,
    UNCHANGED_FORWARD,
    proposer,
)

CAMPAIGN = Campaign(campaign_id="c-moves", seed=3, llm_model="scripted", profile="smoke")
NEW_MOVE = {"title": "Convolve the input", "rationale": "Local patterns before the state.", "steps": [
    {"function": "__init__", "where": "end", "instruction": "Add a depthwise causal Conv1d self.short_conv."},
    {"function": "forward", "where": "start", "instruction": "Run x through self.short_conv first."}]}
IDEA = {"name": "conv-first", "motivation": "see the last few tokens"}


def inventor(world: MemoryWorld, *replies: object, moves: tuple = tuple(MOVES)) -> tuple[Proposer, object]:
    llm, backend = scripted(*replies)  # type: ignore[arg-type]
    return Proposer(llm, world.client, BASELINES, "linear_attention", revisions=1, moves=moves,
                    probe=SANDBOXED_PROBE, invent_share=1.0), backend


def with_cognition(world: MemoryWorld) -> None:
    world.apply(*cognition_events(starter_update(), "memory"))


async def test_a_move_made_from_a_cognition_entry_is_learned_once_its_proposal_passes(world: MemoryWorld) -> None:
    with_cognition(world)
    agent, backend = inventor(world, NEW_MOVE, IDEA, CONV_INIT, CONV_FORWARD)
    events = await agent.propose(CAMPAIGN, index=LINEAR_INDEX)
    learned, created = events
    assert isinstance(learned, MoveLearned) and isinstance(created, ProposalCreated), events
    assert created.move == learned.move_id and learned.move_id.startswith("learned-")
    assert learned.provenance.startswith("cognition:") and learned.cognition_ids == (learned.provenance[10:],)
    assert [(s.site, s.anchor) for s in learned.steps] == [("__init__", "end"), ("forward", "start")]
    assert "x = self.short_conv(" in created.code and learned.experiment_id == created.experiment_id
    asked = backend.seen[0][-1]["content"]  # type: ignore[attr-defined]
    assert "## The idea:" in asked and "## Parent: linear_attention" in asked
    assert asked.index("Reply with JSON only") < asked.index("## Parent:")  # the fixed part first: cached
    # The proposal is then asked to make that move, one function per step.
    assert "## The change to make: Convolve the input" in backend.seen[1][-1]["content"]  # type: ignore[attr-defined]
    assert created.llm is not None and created.llm.completion_tokens > 0


async def test_a_move_whose_draft_fails_is_not_learned(world: MemoryWorld) -> None:
    with_cognition(world)
    agent, _ = inventor(world, NEW_MOVE, IDEA, CONV_INIT, UNCHANGED_FORWARD, CONV_INIT, UNCHANGED_FORWARD)
    events = await agent.propose(CAMPAIGN, index=LINEAR_INDEX)
    assert len(events) == 1 and isinstance(events[0], ProposalRejected)
    assert events[0].move.startswith("learned-")  # its record shows the failed first use


async def test_a_move_whose_step_names_no_code_is_dropped_before_it_is_drafted(world: MemoryWorld) -> None:
    with_cognition(world)
    vague = {**NEW_MOVE, "steps": [{"function": "forward", "where": "return",
                                    "instruction": "Add a linear cost in the sequence length to the output."}]}
    agent, backend = inventor(world, vague, IDEA, CONV_INIT, CONV_FORWARD)
    events = await agent.propose(CAMPAIGN, index=LINEAR_INDEX)
    assert not any(isinstance(e, MoveLearned) for e in events)
    assert "## The change to make: Add a linear cost" not in backend.seen[1][-1]["content"]  # type: ignore[attr-defined]


def test_a_move_creates_its_layers_in_init_and_uses_them_in_another_step() -> None:
    init = Step("__init__", "Add self.gate = nn.Linear(d_model, d_model).", "end")
    used = Step("forward", "Multiply the output by torch.sigmoid(self.gate(x)).", "return")
    assert wires_its_layers((init, used))
    assert not wires_its_layers((init,))  # created, never called
    # The prompt's own example parroted onto forward: a layer cannot be created there.
    assert not wires_its_layers((Step("forward", "Add self.decay = nn.Linear(d_model, n_heads) at the end.", "end"),))


def test_a_step_says_what_to_write_by_a_call_an_operator_or_a_name_its_function_uses() -> None:
    concrete = ["Add self.decay = nn.Linear(d_model, n_heads).", "Multiply q by 0.5 before the scan.",
                "Apply torch.tanh to the output.", "Scale o * 2."]
    for instruction in concrete:
        assert says_what_to_write(instruction, LINEAR, "forward"), instruction
    for instruction in ["Add a linear cost in the sequence length to the output.", "Make it better.", "a"]:
        assert not says_what_to_write(instruction, LINEAR, "forward"), instruction


async def test_a_step_on_a_function_the_parent_lacks_is_dropped(world: MemoryWorld) -> None:
    with_cognition(world)
    only_missing = {**NEW_MOVE, "steps": [{"function": "nowhere", "where": "end", "instruction": "x"}]}
    agent, _ = inventor(world, only_missing, IDEA, CONV_INIT, CONV_FORWARD)
    # The schema's enum keeps a real server to the parent's functions; a reply outside it makes no move, and the
    # library's best move by record is drawn instead.
    events = await agent.propose(CAMPAIGN, index=LINEAR_INDEX)
    assert not any(isinstance(e, MoveLearned) for e in events)
    assert isinstance(events[-1], ProposalCreated | ProposalRejected)
    assert events[-1].move in {move.id for move in MOVES}


def learned(world: MemoryWorld, move_id: str, experiment: str) -> MoveLearned:
    event = MoveLearned(**envelope(experiment, CAMPAIGN.campaign_id), move_id=move_id, title=move_id,  # type: ignore[arg-type]
                        rationale="r", provenance="analysis:e0",
                        steps=(MoveStep(site="forward", anchor="start", instruction="Scale x by a learned gate."),))
    world.apply(event)
    return event


def trained(world: MemoryWorld, experiment: str, parent: str, loss: float, move: str) -> None:
    proposal, run = child(experiment, parent, loss)
    world.apply(msgspec.structs.replace(proposal, move=move, campaign_id=CAMPAIGN.campaign_id),
                msgspec.structs.replace(run, campaign_id=CAMPAIGN.campaign_id))


async def test_memory_keeps_each_moves_record_and_its_line(world: MemoryWorld) -> None:
    world.apply(*baselines({"deltanet": (5.00, 5.02)}))  # noise sd ~0.014
    learned(world, "learned-gate", "a")
    trained(world, "a", "baseline:deltanet", 4.80, "learned-gate")  # beats its parent beyond noise
    trained(world, "b", "a", 4.79, "output-gate")  # within noise of a
    trained(world, "c", "b", 5.50, "learned-gate")  # worse
    rejected: Event = ProposalRejected(**envelope("d", CAMPAIGN.campaign_id), reason="syntax", detail="x",  # type: ignore[arg-type]
                                       move="output-gate", code="x", parent_ids=("a",))
    world.apply(rejected)
    moves = await world.client.moves()
    assert [m.id for m in moves.learned] == ["learned-gate"] and moves.learned[0].provenance == "analysis:e0"
    assert msgspec.structs.asdict(moves.records["learned-gate"]) == {"drawn": 2, "settled": 2, "trained": 2,
                                                                     "beat_parent": 1}
    assert msgspec.structs.asdict(moves.records["output-gate"]) == {"drawn": 2, "settled": 2, "trained": 1,
                                                                    "beat_parent": 0}
    found = await world.client.experiment("c")
    assert found is not None and found.experiment.moves_in_line == ["learned-gate", "output-gate", "learned-gate"]
    assert (await world.client.moves("another-campaign")).records == {}


def test_a_learned_move_applies_where_its_functions_are_and_its_line_has_not_made_it() -> None:
    step = MemoryStep(site="def chunked_linear_attention\\(", anchor="end", instruction="i")
    entry = LearnedMove(id="learned-x", title="t", rationale="r", provenance="analysis:e", steps=[step])
    move = from_learned(entry)
    assert move.present == NEVER_PRESENT and move.steps == (Step("def chunked_linear_attention\\(", "i", "end"),)
    assert applicable(LINEAR, [move]) == [move]
    assert applicable(LINEAR, [move], made=["learned-x"]) == []
    assert applicable(BASELINES["deltanet"].read_text(), [move]) == []  # deltanet has no such function


def record(drawn: int, settled: int, trained: int, beat_parent: int) -> MoveRecord:
    return MoveRecord(drawn=drawn, settled=settled, trained=trained, beat_parent=beat_parent)


def test_moves_are_drawn_by_their_record() -> None:
    a, b, c = MOVES[:3]
    assert ucb_move([a, b, c], {a.id: record(3, 3, 3, 3), b.id: record(1, 1, 0, 0)}, seed=1) == c  # never drawn
    records = {a.id: record(4, 4, 4, 2), b.id: record(4, 4, 0, 0), c.id: record(4, 4, 4, 0)}
    assert ucb_move([a, b, c], records, seed=1) == a  # same draws: the best record
    records[a.id] = record(40, 40, 40, 12)  # drawn ten times as often for a small edge
    assert ucb_move([a, b, c], records, seed=1, exploration=2.0) == c
    assert ucb_move([], records, seed=1) is None


async def test_the_control_arm_draws_built_in_moves_without_memory(world: MemoryWorld) -> None:
    with_cognition(world)
    learned(world, "learned-gate", "a")
    llm, backend = scripted(IDEA, CONV_INIT, CONV_FORWARD, CONV_INIT, CONV_FORWARD, CONV_INIT, CONV_FORWARD)
    agent = Proposer(llm, world.client, BASELINES, "linear_attention", revisions=1, moves=MOVES,
                     probe=SANDBOXED_PROBE, invent_share=1.0)
    events = await agent.propose(dataclasses.replace(CAMPAIGN, control=True), index=LINEAR_INDEX)
    assert not any(isinstance(e, MoveLearned) for e in events)
    assert events[-1].move in {move.id for move in MOVES}  # type: ignore[union-attr]
    prompt = backend.seen[0][-1]["content"]  # type: ignore[attr-defined]
    assert "## What the analysis of the parent says\n(not shown)" in prompt
    assert "## Ideas from the literature that match these symptoms\n(none retrieved)" in prompt


async def test_without_a_library_the_change_is_the_llms_own(world: MemoryWorld) -> None:
    llm, _ = scripted(IDEA, "```python\n" + CONV_INIT + "\n```")
    agent = Proposer(llm, world.client, BASELINES, "linear_attention", revisions=0, moves=())
    events = await agent.propose(CAMPAIGN, index=0)
    assert len(events) == 1 and events[0].move == FREE_MOVE  # type: ignore[union-attr]


async def test_the_free_mode_is_an_arm_whose_record_is_kept_per_model(world: MemoryWorld) -> None:
    world.apply(*baselines({"deltanet": (5.00, 5.02)}))
    for experiment, model in (("f1", "big-coder"), ("f2", "big-coder"), ("g1", "small-coder")):
        proposal, run = child(experiment, "baseline:deltanet", 4.8)
        usage = LlmUsage(model=model, prompt_tokens=1, completion_tokens=1, latency_s=0.1)
        world.apply(msgspec.structs.replace(proposal, move=FREE_MOVE if model == "big-coder" else "output-gate",
                                            llm=usage), run)
    big = (await world.client.moves(model="big-coder")).records
    assert set(big) == {FREE_MOVE} and big[FREE_MOVE].beat_parent == 2
    assert set((await world.client.moves(model="small-coder")).records) == {"output-gate"}
    # By its record the free mode is drawn for the model it pays for, and passed over for one it does not.
    library = list(MOVES[:3])
    good = {m.id: record(5, 5, 5, 1) for m in library}
    assert ucb_move([*library, FREE_CHOICE], {**good, FREE_MOVE: record(5, 5, 5, 5)}, seed=1) is FREE_CHOICE
    assert ucb_move([*library, FREE_CHOICE], {**good, FREE_MOVE: record(5, 5, 0, 0)}, seed=1) is not FREE_CHOICE


async def test_with_the_free_arm_a_model_with_no_record_tries_its_own_change(world: MemoryWorld) -> None:
    llm, backend = scripted(IDEA, "```python\n" + CONV_INIT + "\n```")
    # Every library move has been drawn for this model, the free mode never: it goes first.
    agent = Proposer(llm, world.client, BASELINES, "linear_attention", revisions=0, moves=MOVES[:1], free_arm=True)
    world.apply(*baselines({"deltanet": (5.00, 5.02)}))
    proposal, run = child("m1", "baseline:deltanet", 4.9)
    usage = LlmUsage(model="scripted", prompt_tokens=1, completion_tokens=1, latency_s=0.1)
    world.apply(msgspec.structs.replace(proposal, move=MOVES[0].id, llm=usage), run)
    assert MOVES[0].applies_to(LINEAR)
    events = await agent.propose(CAMPAIGN, index=LINEAR_INDEX)
    assert events[-1].move == FREE_MOVE  # type: ignore[union-attr]
    assert "Change one clear thing" in backend.seen[0][-1]["content"]  # type: ignore[attr-defined]


def test_a_crossover_ports_a_references_component_and_asks_for_the_wiring() -> None:
    parent, donor = LINEAR, BASELINES["gla"].read_text()
    assert ("chunked_gla", False) in components(parent, donor)
    offer = crossover(parent, donor, "gla-run", "exp-gla", seed=0)
    assert offer is not None and offer.move.id == CROSSOVER_MOVE and offer.donor_ref == "exp-gla"
    name = offer.move.title.split("`")[1]
    assert f"def {name}(" in offer.code and offer.code != parent
    assert undefined_names(offer.code) == []  # the helpers it calls came with it
    forward = offer.move.steps[-1]
    assert forward.site == "forward" and "gla-run" in forward.instruction
    assert crossover(parent, parent, "itself", "exp-0", seed=0) is None  # nothing to port


DELTANET = BASELINES["deltanet"].read_text()
NEGATIVE_BETA = DELTANET.replace("beta = torch.sigmoid(self.b_proj(x))", "beta = 2 * torch.sigmoid(self.b_proj(x))")


def test_a_crossover_never_turns_the_parent_into_its_donor() -> None:
    # The child's one change is in `_project`: porting its parent's `_project` back would just undo it.
    assert components(NEGATIVE_BETA, DELTANET) == []
    assert crossover(NEGATIVE_BETA, DELTANET, "deltanet", "baseline:deltanet", seed=0) is None


async def test_a_ported_component_the_parent_calls_already_is_the_whole_change(world: MemoryWorld) -> None:
    # The parent differs from the donor in `_project` and `_output`; each port keeps the other difference.
    parent = NEGATIVE_BETA.replace("self.o_proj(self.head_norm(", "self.o_proj(torch.tanh(self.head_norm(", 1)
    parent = parent.replace(".reshape(b, t, -1))", ".reshape(b, t, -1)))", 1)
    offer = crossover(parent, DELTANET, "deltanet", "baseline:deltanet", seed=0)
    assert offer is not None and offer.move.steps == ()  # the parent calls both already: no wiring to write
    # The draft is the port itself: held against the parent's own code, not the code the prompt showed.
    agent, _ = proposer(world, {"name": "port", "motivation": "the reference's version"}, GOOD_CODE,
                        probe=SANDBOXED_PROBE)
    context = ParentContext(ref="e-parent", name="parent", code=offer.code, motivation="", results="", analysis="",
                            own_code=parent)
    assert await agent.probe_problem(offer.code, context, offer.move, "smoke") is None
    shown_only = dataclasses.replace(context, own_code="")
    problem = await agent.probe_problem(offer.code, shown_only, offer.move, "smoke")
    assert problem is not None and problem.reason == "duplicate"


async def test_a_crossover_drawn_names_its_donor_as_second_parent(world: MemoryWorld) -> None:
    world.apply(*baselines({"deltanet": (5.00, 5.02)}))
    ranked = {"r-linear": (LINEAR, 2.0), "r-gla": (BASELINES["gla"].read_text(), 1.0)}
    for experiment, (code, fitness) in ranked.items():
        proposal, run = child(experiment, "baseline:deltanet", 4.9, code=code)
        world.apply(msgspec.structs.replace(proposal, campaign_id=CAMPAIGN.campaign_id),
                    msgspec.structs.replace(run, campaign_id=CAMPAIGN.campaign_id),
                    FitnessComputed(**envelope(experiment, CAMPAIGN.campaign_id), loss_term=fitness,  # type: ignore[arg-type]
                                    benchmark_term=0.0, judge_term=0.0, total=fitness))
    # A library whose one move fits no parent, and no free arm: the crossover is the only arm.
    unfit = dataclasses.replace(MOVES[0], requires="a pattern no mixer has")
    llm, _ = scripted(IDEA, *[GOOD_CODE] * 8)
    agent = Proposer(llm, world.client, BASELINES, "linear_attention", revisions=1, moves=(unfit,),
                     crossover_arm=True)
    outcome = (await agent.propose(CAMPAIGN, index=0))[-1]
    assert isinstance(outcome, ProposalCreated | ProposalRejected) and outcome.move == CROSSOVER_MOVE
    assert set(outcome.parent_ids) == set(ranked) and len(outcome.parent_ids) == 2


async def test_a_campaign_with_no_ranked_runs_yet_ports_from_another_baseline(world: MemoryWorld) -> None:
    unfit = dataclasses.replace(MOVES[0], requires="a pattern no mixer has")
    llm, _ = scripted(IDEA, *[GOOD_CODE] * 8)
    agent = Proposer(llm, world.client, BASELINES, "linear_attention", revisions=1, moves=(unfit,),
                     crossover_arm=True)
    outcome = (await agent.propose(CAMPAIGN, index=LINEAR_INDEX))[-1]
    assert isinstance(outcome, ProposalCreated | ProposalRejected) and outcome.move == CROSSOVER_MOVE
    first, donor = outcome.parent_ids
    assert first == "baseline:linear_attention" and donor.startswith("baseline:") and donor != first
