"""The researcher's proposal plumbing: prompt, repair, static checks, near-duplicates, budget bookkeeping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

from services.researcher.handlers import CampaignBook
from services.researcher.loop import ResearchLoop
from services.researcher.moves import MOVES, TODO
from services.researcher.proposer import SAME_CODE, BehaviourProbe, Campaign, Proposer
from shared.events import (
    Budget,
    CampaignStarted,
    CampaignStopped,
    DebugGaveUp,
    ProposalCreated,
    ProposalRejected,
    TrainSucceeded,
    new_event_id,
    utc_now,
)
from shared.llm import LlmUnavailable
from shared.memory_client import ExperimentBrief
from shared.mixer.baselines import BASELINES, baseline_ref
from shared.mixer.probe import probe_draft
from shared.mixer.source import code_similarity
from shared.store import mongo_client
from tests.agents.conftest import MemoryWorld, scripted
from tests.memory.history import baseline_events

CAMPAIGN = Campaign(campaign_id="c1", seed=1, llm_model="scripted", profile="smoke")
GOOD_CODE = """```python
class Mixer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, **kwargs):
        super().__init__()
        self.gate = nn.Linear(d_model, d_model)

    def forward(self, x):
        return torch.sigmoid(self.gate(x)) * torch.cumsum(x, dim=1) / math.sqrt(2.0)
```"""


LINEAR_RENAMED = (BASELINES["linear_attention"].read_text().replace("def _heads", "def _split")
                  .replace("self._heads", "self._split").replace("_project", "_features")
                  .replace("chunked_linear_attention", "prefix_scan"))
LINEAR_INDEX = 3  # the first proposals start from the baselines in name order; the fourth is linear_attention
SANDBOXED_PROBE: BehaviourProbe = partial(asyncio.to_thread, probe_draft, profile="smoke")


def proposer(world: MemoryWorld, *replies: object, **options: object) -> tuple[Proposer, object]:
    """A proposer on scripted replies; without ``moves`` it leaves the change to the LLM (one code reply)."""
    llm, backend = scripted(*replies)  # type: ignore[arg-type]
    options.setdefault("moves", ())
    options.setdefault("revisions", 1)
    return Proposer(llm, world.client, BASELINES, "linear_attention", **options), backend  # type: ignore[arg-type]


async def test_a_first_proposal_starts_from_a_baseline_and_is_repaired(world: MemoryWorld) -> None:
    agent, backend = proposer(world, {"name": "gated-cumsum", "motivation": "gate a running sum"}, GOOD_CODE)
    event = (await agent.propose(CAMPAIGN, index=0))[-1]
    assert isinstance(event, ProposalCreated)
    assert event.code.startswith("import torch\nimport torch.nn as nn\n") and "```" not in event.code
    assert event.parent_ids[0].startswith("baseline:") and event.llm is not None
    prompt = backend.seen[0][-1]["content"]  # type: ignore[attr-defined]
    assert "class Mixer(nn.Module)" in prompt and "Causal" in prompt and "chunks of at most 64" in prompt
    assert "```python code block" in backend.seen[1][-1]["content"]  # type: ignore[attr-defined]
    assert event.name == "gated-cumsum" and event.motivation == "gate a running sum"


async def test_the_baselines_are_drawn_from_the_pool_with_their_numbers(world: MemoryWorld) -> None:
    world.apply(CampaignStarted(event_id="start-c1", occurred_at=utc_now(), producer="cli", campaign_id="c1",
                                profile="smoke", budget=Budget(experiments=3, cpu_hours=1.0), llm_model="scripted"),
                *baseline_events("smoke", "deltanet"),
                *baseline_events("smoke", "gla", (3.9, 3.92), (0.4, 0.41), reference=False))
    drawn = set()
    for index in range(6):
        agent, _ = proposer(world, {"name": "gated", "motivation": "gate a running sum"}, GOOD_CODE)
        event = (await agent.propose(CAMPAIGN, index=index))[-1]
        drawn.add(event.parent_ids[0])
    assert len(drawn) > 1 and drawn <= {baseline_ref(name) for name in BASELINES if name != "softmax_attention"}
    measured = ExperimentBrief(id="baseline:gla", name="gla", val_loss=3.91, val_loss_sd=0.014, seeds=2, fitness=1.6)
    gla = await agent.parent_context(measured, index=0)
    assert gla.name == "gla" and gla.code == BASELINES["gla"].read_text()
    assert gla.results == "val loss 3.9100 ± 0.0140 (2 seeds), fitness 1.600, a built-in baseline"


async def test_static_problems_are_shown_to_the_llm_then_rejected(world: MemoryWorld) -> None:
    bad = "```python\nimport os\nclass Mixer:\n    pass\n```"
    agent, backend = proposer(world, {"name": "x", "motivation": "m"}, bad, bad)
    event = (await agent.propose(CAMPAIGN, index=1))[-1]
    assert isinstance(event, ProposalRejected) and event.reason == "contract"
    assert "class Mixer:" in event.code and event.parent_ids[0].startswith("baseline:")  # the draft, to read back
    assert event.llm is not None and event.llm.completion_tokens > 0  # the LLM's work is spend even when rejected
    revision = backend.seen[2][-1]["content"]  # type: ignore[attr-defined]
    assert "rejected before training" in revision and "Mixer must define __init__" in revision


async def test_a_draft_written_again_word_for_word_starts_again_from_the_parent_sampled_wider(
        world: MemoryWorld) -> None:
    bad = "```python\nimport os\nclass Mixer:\n    pass\n```"
    agent, backend = proposer(world, {"name": "x", "motivation": "m"}, bad, bad, GOOD_CODE, revisions=2)
    event = (await agent.propose(CAMPAIGN, index=1))[-1]
    assert isinstance(event, ProposalCreated) and "torch.sigmoid(self.gate(x))" in event.code
    seen = backend.seen  # type: ignore[attr-defined]
    assert "Fix exactly that" in seen[2][-1]["content"]  # the first rejection: a revision of the draft
    restart = seen[3]
    assert restart[-1]["content"].startswith("Your last version was rejected before training: contract")
    assert "Start again from the parent" in restart[-1]["content"] and len(restart) == len(seen[1])
    assert backend.temperatures[1:] == [0.7, 0.9, 1.0]  # type: ignore[attr-defined]


async def test_the_parent_unchanged_is_sent_back_then_a_duplicate(world: MemoryWorld) -> None:
    parent = BASELINES["deltanet"].read_text()
    agent, backend = proposer(world, {"name": "same", "motivation": "m"}, parent, parent)
    event = (await agent.propose(CAMPAIGN, index=0))[-1]  # index 0 picks deltanet, the first baseline by name
    assert isinstance(event, ProposalRejected) and event.reason == "duplicate"
    revision = backend.seen[2][-1]["content"]  # type: ignore[attr-defined]
    assert "of the code is the parent's (deltanet)" in revision and "motivation" in revision


async def test_a_parent_copy_revised_into_a_change_is_proposed(world: MemoryWorld) -> None:
    parent = BASELINES["deltanet"].read_text()
    agent, _ = proposer(world, {"name": "gated", "motivation": "gate a running sum"}, parent, GOOD_CODE)
    event = (await agent.propose(CAMPAIGN, index=0))[-1]
    assert isinstance(event, ProposalCreated) and "torch.sigmoid(self.gate(x))" in event.code


async def test_a_near_copy_of_a_past_experiment_is_a_duplicate(world: MemoryWorld) -> None:
    first, _ = proposer(world, {"name": "a", "motivation": "gate a running sum"}, GOOD_CODE)
    created = (await first.propose(CAMPAIGN, index=0))[-1]
    world.apply(created)
    again, _ = proposer(world, {"name": "b", "motivation": "gate a running sum"}, GOOD_CODE)
    event = (await again.propose(CAMPAIGN, index=3))[-1]
    assert isinstance(event, ProposalRejected) and event.reason == "duplicate"


async def test_with_the_probe_a_past_experiment_is_a_duplicate_only_if_it_computes_the_same(
        world: MemoryWorld) -> None:
    first, _ = proposer(world, {"name": "a", "motivation": "gate a running sum"}, GOOD_CODE, probe=SANDBOXED_PROBE)
    created = (await first.propose(CAMPAIGN, index=0))[-1]
    assert isinstance(created, ProposalCreated)
    world.apply(created)
    rescaled = GOOD_CODE.replace("math.sqrt(2.0)", "math.sqrt(3.0)")  # one constant: the same text, other outputs
    close, _ = proposer(world, {"name": "b", "motivation": "gate a running sum"}, rescaled, probe=SANDBOXED_PROBE)
    event = (await close.propose(CAMPAIGN, index=3))[-1]
    assert isinstance(event, ProposalCreated), event
    again, _ = proposer(world, {"name": "c", "motivation": "gate a running sum"}, GOOD_CODE, probe=SANDBOXED_PROBE)
    event = (await again.propose(CAMPAIGN, index=3))[-1]
    assert isinstance(event, ProposalRejected) and event.reason == "duplicate"
    assert f"outputs equal experiment {created.experiment_id}'s" in event.detail


async def test_a_helper_the_draft_calls_but_forgot_is_copied_from_its_parent(world: MemoryWorld) -> None:
    parent = BASELINES["deltanet"].read_text()
    forgetful = GOOD_CODE.replace("torch.sigmoid(self.gate(x)) * torch.cumsum(x, dim=1) / math.sqrt(2.0)",
                                  "chunked_delta_rule(x, x, x, torch.sigmoid(self.gate(x))[..., 0], 16)")
    agent, _ = proposer(world, {"name": "helper", "motivation": "reuse the delta rule"}, forgetful)
    event = (await agent.propose(CAMPAIGN, index=0))[-1]  # deltanet is the parent
    assert isinstance(event, ProposalCreated), event
    assert "def chunked_delta_rule(" in event.code and "def chunked_delta_rule(" in parent


async def test_a_draft_of_the_changed_function_is_merged_into_the_parent(world: MemoryWorld) -> None:
    changed = ("```python\ndef _output(self, o):\n    b, h, t, dv = o.shape\n"
               "    o = self.head_norm(o).transpose(1, 2).reshape(b, t, h * dv)\n"
               "    return self.o_proj(torch.tanh(o))\n```")
    agent, backend = proposer(world, {"name": "tanh-out", "motivation": "bound the output"}, changed)
    event = (await agent.propose(CAMPAIGN, index=0))[-1]  # deltanet is the parent
    assert isinstance(event, ProposalCreated), event
    assert "self.o_proj(torch.tanh(o))" in event.code and "def chunked_delta_rule(" in event.code
    assert "def recurrent_reference(" not in event.code  # merged into the parent as the prompt showed it
    assert "only the functions of the parent that you change" in backend.seen[1][-1]["content"]  # type: ignore


def envelope(experiment: str) -> dict[str, object]:
    return {"event_id": new_event_id(), "occurred_at": utc_now(), "producer": "t", "campaign_id": "c1",
            "experiment_id": experiment}


def test_the_book_counts_once_and_tracks_budget(mongo_uri: str) -> None:
    book = CampaignBook(mongo_client(mongo_uri)["book"])
    start = CampaignStarted(**envelope(""), profile="smoke", budget=Budget(experiments=3, cpu_hours=1.0),
                            llm_model="m")
    events = [
        start,
        ProposalCreated(**envelope("e1"), profile="smoke", name="a", motivation="m", code="x"),
        ProposalCreated(**envelope("e2"), profile="smoke", name="b", motivation="m", code="x"),
        ProposalRejected(**envelope("e3"), reason="syntax", detail="d"),
        TrainSucceeded(**envelope("e1"), attempt=1, profile="smoke", curve=(), train_loss=1, val_loss=1,
                       benchmarks={}, params=1, tokens=1, tokens_per_s=1, device="cpu", gpu_seconds=0,
                       cpu_core_seconds=1800, checkpoint_path=""),
    ]
    for event in [*events, *events]:  # every event delivered twice
        book.apply(event)
    view = book.campaign("c1")
    assert view is not None
    assert (view.proposed, view.in_flight, view.cpu_hours) == (3, 1, 0.5)
    assert not view.budget_left  # 3 of 3 experiments proposed
    book.apply(DebugGaveUp(**envelope("e2"), attempts=3, last_error_kind="nan", last_error="x"))
    assert book.campaign("c1").in_flight == 0  # type: ignore[union-attr]


async def test_sampling_is_seeded_per_campaign_and_proposal(world: MemoryWorld) -> None:
    seeds = []
    for index in (0, 1, 0):
        agent, backend = proposer(world, {"name": "a", "motivation": "gate a running sum"}, GOOD_CODE)
        await agent.propose(CAMPAIGN, index=index)
        seeds.append(tuple(backend.seeds))  # type: ignore[attr-defined]
    assert None not in seeds[0]
    assert seeds[0] == seeds[2] and seeds[0] != seeds[1]  # reproducible, and new for each proposal


SHORT_CONV = next(move for move in MOVES if move.id == "short-conv")
LINEAR = BASELINES["linear_attention"].read_text()
CONV_LINE = "self.short_conv = nn.Conv1d(d_model, d_model, kernel_size=4, padding=3, groups=d_model)"
CONV_INIT = LINEAR.replace("        self.o_proj = nn.Linear(d_model, d_model, bias=False)\n",
                           f"        self.o_proj = nn.Linear(d_model, d_model, bias=False)\n        {CONV_LINE}\n")
CONV_FORWARD = """```python
def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.short_conv(x.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2)
    q, k, v = self._project(x)
    o = chunked_linear_attention(q, k, v, self.chunk_size, self.eps)
    return self._output(o)
```"""
UNCHANGED_FORWARD = CONV_FORWARD.replace(
    "    x = self.short_conv(x.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2)\n", "")


async def test_the_prompt_asks_for_one_concrete_move_and_cites_its_cognition(world: MemoryWorld) -> None:
    agent, backend = proposer(world, {"name": "conv", "motivation": "see the last tokens"}, *[CONV_INIT] * 6,
                              moves=MOVES)
    await agent.propose(CAMPAIGN, index=LINEAR_INDEX)
    prompt = backend.seen[0][-1]["content"]  # type: ignore[attr-defined]
    assert "## The change to make:" in prompt and "Change one clear thing" not in prompt
    move = next(move for move in MOVES if move.title in prompt)
    assert move.applies_to(LINEAR) and move.instruction in prompt
    agent, _ = proposer(world, {"name": "conv", "motivation": "see the last tokens"}, CONV_INIT, CONV_FORWARD,
                        moves=[SHORT_CONV], probe=SANDBOXED_PROBE)
    event = (await agent.propose(CAMPAIGN, index=LINEAR_INDEX))[-1]
    assert isinstance(event, ProposalCreated) and set(SHORT_CONV.cognition) <= set(event.cognition_ids)


async def test_a_move_is_written_one_function_per_step(world: MemoryWorld) -> None:
    # The first reply is the whole file with the new line: only the __init__ it was asked for is taken from it.
    agent, backend = proposer(world, {"name": "conv", "motivation": "see the last tokens"}, CONV_INIT, CONV_FORWARD,
                              moves=[SHORT_CONV], probe=SANDBOXED_PROBE)
    event = (await agent.propose(CAMPAIGN, index=LINEAR_INDEX))[-1]
    steps = [backend.seen[i][-1]["content"] for i in (1, 2)]  # type: ignore[attr-defined]
    assert steps[0].startswith("Step 1 of 2: rewrite `__init__`") and "self.qkv_proj = nn.Linear" in steps[0]
    assert steps[1].startswith("Step 2 of 2: rewrite `forward`") and "chunked_linear_attention(q, k" in steps[1]
    assert isinstance(event, ProposalCreated), event
    assert CONV_LINE in event.code and "x = self.short_conv(x.transpose(1, 2))" in event.code
    assert event.code.count("class Mixer") == 1
    assert code_similarity(event.code, LINEAR) >= SAME_CODE  # a real change that text similarity calls a copy


async def test_a_step_is_answered_with_the_lines_of_its_marked_slot(world: MemoryWorld) -> None:
    # Asked for the slot only, the model writes a line, not the function: it goes where the TODO mark was.
    shift = "x = self.short_conv(x.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2)"
    agent, backend = proposer(world, {"name": "conv", "motivation": "see the last tokens"},
                              f"```python\n{CONV_LINE}\n```", f"```python\n    {shift}\n```",
                              moves=[SHORT_CONV], probe=SANDBOXED_PROBE)
    event = (await agent.propose(CAMPAIGN, index=LINEAR_INDEX))[-1]
    steps = [backend.seen[i][-1]["content"] for i in (1, 2)]  # type: ignore[attr-defined]
    assert all("Answer with only the new lines that go where the TODO comment is" in step for step in steps)
    assert isinstance(event, ProposalCreated), event
    init, forward = event.code.split("def __init__", 1)[1].split("def forward", 1)
    assert f"        {CONV_LINE}\n" in init and TODO not in event.code
    assert f"        {shift}\n" in forward and forward.index(shift) < forward.index("self._project(x)")


async def test_a_step_left_undone_starts_again_from_the_parent_sampled_wider(world: MemoryWorld) -> None:
    agent, backend = proposer(world, {"name": "conv", "motivation": "see the last tokens"},
                              CONV_INIT, UNCHANGED_FORWARD, CONV_INIT, CONV_FORWARD,
                              moves=[SHORT_CONV], probe=SANDBOXED_PROBE)
    event = (await agent.propose(CAMPAIGN, index=LINEAR_INDEX))[-1]
    retry = backend.seen[3][-1]["content"]  # type: ignore[attr-defined]
    assert retry.startswith("Your last version was rejected before training: duplicate")
    assert "`self.short_conv` is created in __init__ but never used" in retry and "Step 1 of 2" in retry
    shown = retry.split("```python", 1)[1].split("```", 1)[0]
    assert "short_conv" not in shown  # the parent's __init__ again, not the draft's
    temperatures = backend.temperatures[1:]  # type: ignore[attr-defined]
    assert temperatures[0] == temperatures[1] < temperatures[2] == temperatures[3]
    assert isinstance(event, ProposalCreated) and "x = self.short_conv(" in event.code


async def test_without_moves_the_llm_chooses_the_change(world: MemoryWorld) -> None:
    agent, backend = proposer(world, {"name": "a", "motivation": "m"}, GOOD_CODE, moves=())
    await agent.propose(CAMPAIGN, index=0)
    prompt = backend.seen[0][-1]["content"]  # type: ignore[attr-defined]
    assert "Change one clear thing" in prompt and "## The change to make:" not in prompt


async def test_a_renamed_parent_is_caught_by_its_outputs_and_sent_back(world: MemoryWorld) -> None:
    agent, backend = proposer(world, {"name": "renamed", "motivation": "m"}, LINEAR_RENAMED, GOOD_CODE,
                              probe=SANDBOXED_PROBE)
    event = (await agent.propose(CAMPAIGN, index=LINEAR_INDEX))[-1]
    revision = backend.seen[2][-1]["content"]  # type: ignore[attr-defined]
    assert "its outputs equal the parent (linear_attention)'s" in revision and "motivation describes" in revision
    assert isinstance(event, ProposalCreated) and "torch.sigmoid(self.gate(x))" in event.code


async def test_a_renamed_parent_sent_back_unchanged_is_rejected_as_a_duplicate(world: MemoryWorld) -> None:
    agent, _ = proposer(world, {"name": "renamed", "motivation": "m"}, LINEAR_RENAMED, LINEAR_RENAMED,
                        probe=SANDBOXED_PROBE)
    event = (await agent.propose(CAMPAIGN, index=LINEAR_INDEX))[-1]
    assert isinstance(event, ProposalRejected) and event.reason == "duplicate"
    assert "outputs equal the parent (linear_attention)'s" in event.detail


async def first_revision(world: MemoryWorld, draft: str, revised: str) -> tuple[str, object]:
    """What the LLM is told after the code reply ``draft`` (its next one is ``revised``), and the outcome."""
    agent, backend = proposer(world, {"name": "revised", "motivation": "m"}, draft, revised, probe=SANDBOXED_PROBE)
    event = (await agent.propose(CAMPAIGN, index=LINEAR_INDEX))[-1]
    return backend.seen[2][-1]["content"], event  # type: ignore[attr-defined]


async def test_a_layer_added_but_never_used_is_named_when_the_draft_goes_back(world: MemoryWorld) -> None:
    linear = BASELINES["linear_attention"].read_text()
    unused_gate = linear.replace("        super().__init__()\n",
                                 "        super().__init__()\n        self.out_gate = nn.Linear(d_model, d_model)\n")
    revision, event = await first_revision(world, unused_gate, GOOD_CODE)
    assert "`self.out_gate` is created in __init__ but never used" in revision
    assert isinstance(event, ProposalCreated)


async def test_a_value_computed_and_thrown_away_is_named_when_the_draft_goes_back(world: MemoryWorld) -> None:
    linear = BASELINES["linear_attention"].read_text()
    thrown_away = linear.replace("        return self._output(o)\n",
                                 "        torch.sigmoid(o)\n        return self._output(o)\n")
    revision, _ = await first_revision(world, thrown_away, GOOD_CODE)
    assert "`torch.sigmoid(o)`" in revision and "computes a value that nothing uses" in revision


# Runs at an even length, raises at one token or an odd length (as drafts do): only running it tells.
SPLIT_IN_HALVES = ("        head, tail = x.split(x.shape[1] // 2 or 1, dim=1)\n"
                   "        return self._output(o) + 0 * head.mean()\n")


async def test_a_draft_that_fails_a_check_goes_back_with_its_failing_line(world: MemoryWorld) -> None:
    linear = BASELINES["linear_attention"].read_text()
    broken = linear.replace("        return self._output(o)\n", SPLIT_IN_HALVES)
    scaled = linear.replace("        return self._output(o)\n", "        return self._output(o) * 0.5\n")
    revision, event = await first_revision(world, broken, scaled)
    assert "it fails the" in revision and "x.split(" in revision and "ValueError" in revision
    assert isinstance(event, ProposalCreated) and "* 0.5" in event.code


async def test_a_draft_still_failing_a_check_after_its_revisions_is_proposed_for_the_debugger(
        world: MemoryWorld) -> None:
    linear = BASELINES["linear_attention"].read_text()
    broken = linear.replace("        return self._output(o)\n", SPLIT_IN_HALVES)
    agent, _ = proposer(world, {"name": "halves", "motivation": "m"}, broken, broken, probe=SANDBOXED_PROBE)
    event = (await agent.propose(CAMPAIGN, index=LINEAR_INDEX))[-1]
    assert isinstance(event, ProposalCreated) and "x.split(" in event.code  # no copy: the engineer reports it


class NoProposals:
    async def propose(self, campaign: Campaign, index: int) -> ProposalCreated:
        raise AssertionError("a campaign without research got a proposal")


async def test_a_campaign_without_research_runs_only_what_is_submitted_then_stops(mongo_uri: str) -> None:
    book = CampaignBook(mongo_client(mongo_uri)["no_research"])
    book.apply(CampaignStarted(**envelope(""), profile="smoke", budget=Budget(experiments=1), llm_model="m",
                               research=False))
    loop = ResearchLoop(book, NoProposals(), js=None, max_in_flight=2)  # type: ignore[arg-type]
    published: list[object] = []

    async def record(event: object) -> None:
        published.append(event)

    loop.publish = record  # type: ignore[method-assign]
    await loop.step(book.campaign("c1"))  # type: ignore[arg-type]
    assert published == []  # nothing proposed, and not stopped: its budget waits for submissions
    book.apply(ProposalCreated(**{**envelope("sub-1"), "producer": "submit"}, profile="smoke", name="mine",
                               motivation="m", code="x"))
    await loop.step(book.campaign("c1"))  # type: ignore[arg-type]
    assert published == []  # in flight
    book.apply(TrainSucceeded(**envelope("sub-1"), attempt=1, profile="smoke", curve=(), train_loss=1, val_loss=1,
                              benchmarks={}, params=1, tokens=1, tokens_per_s=1, device="cpu", gpu_seconds=0,
                              cpu_core_seconds=1, checkpoint_path=""))
    await loop.step(book.campaign("c1"))  # type: ignore[arg-type]
    assert [type(e) for e in published] == [CampaignStopped]


class HeldProposals:
    """Drafts that wait until the test lets them go: shows which ran at once, and with which indices."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.release = asyncio.Event()
        self.fail_next = False

    async def propose(self, campaign: Campaign, index: int) -> list[ProposalCreated]:
        self.started.append(index)
        if self.fail_next:
            self.fail_next = False
            raise LlmUnavailable("down")
        await self.release.wait()
        return [ProposalCreated(**envelope(f"e{index}"), profile="smoke", name="n", motivation="m", code="x")]


async def run_steps(loop: ResearchLoop, book: CampaignBook, until: Callable[[], bool]) -> None:
    for _ in range(200):
        loop.settle()
        await loop.step(book.campaign("c1"))  # type: ignore[arg-type]
        if until():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the loop never got there")


async def test_drafts_run_at_once_within_the_budget_and_the_campaign_stops_after_the_last(mongo_uri: str) -> None:
    book = CampaignBook(mongo_client(mongo_uri)["drafts"])
    book.apply(CampaignStarted(**envelope(""), profile="smoke", budget=Budget(experiments=3), llm_model="m"))
    proposals = HeldProposals()
    loop = ResearchLoop(book, proposals, js=None, max_in_flight=3, drafts_at_once=2,  # type: ignore[arg-type]
                        retry_s=0)
    published: list[object] = []

    async def publish(event: ProposalCreated | CampaignStopped) -> None:
        published.append(event)
        book.apply(event)

    loop.publish = publish  # type: ignore[assignment]
    await run_steps(loop, book, lambda: len(proposals.started) == 2)
    await asyncio.sleep(0.05)
    assert proposals.started == [0, 1]  # two at once, never a third: drafts_at_once
    proposals.release.set()
    await run_steps(loop, book, lambda: len(published) == 3)
    assert sorted(proposals.started) == [0, 1, 2]  # distinct indices, and the budget of 3 is not exceeded
    for index in range(3):  # all three in flight, so the campaign runs on until they are done
        book.apply(DebugGaveUp(**envelope(f"e{index}"), attempts=1, last_error_kind="nan", last_error="x"))
    await run_steps(loop, book, lambda: isinstance(published[-1], CampaignStopped))
    assert [type(e) for e in published] == [ProposalCreated] * 3 + [CampaignStopped]


async def test_a_failed_draft_gives_its_index_back_and_in_flight_experiments_hold_drafts_back(mongo_uri: str) -> None:
    book = CampaignBook(mongo_client(mongo_uri)["failed_draft"])
    book.apply(CampaignStarted(**envelope(""), profile="smoke", budget=Budget(experiments=5), llm_model="m"))
    book.apply(ProposalCreated(**envelope("training"), profile="smoke", name="n", motivation="m", code="x"))
    proposals = HeldProposals()
    proposals.fail_next = True
    loop = ResearchLoop(book, proposals, js=None, max_in_flight=2, drafts_at_once=4,  # type: ignore[arg-type]
                        retry_s=0)
    await run_steps(loop, book, lambda: len(proposals.started) == 2)
    await asyncio.sleep(0.05)
    # One experiment in flight leaves room for one draft; the first failed and its index 1 came round again.
    assert proposals.started == [1, 1]


def test_the_campaign_behind_gets_the_next_draft(mongo_uri: str) -> None:
    book = CampaignBook(mongo_client(mongo_uri)["fair"])
    for campaign_id in ("ahead", "behind"):
        book.apply(CampaignStarted(**{**envelope(""), "campaign_id": campaign_id}, profile="smoke",
                                   budget=Budget(experiments=5), llm_model="m"))
    book.apply(ProposalCreated(**{**envelope("e1"), "campaign_id": "ahead"}, profile="smoke", name="n",
                               motivation="m", code="x"))
    loop = ResearchLoop(book, HeldProposals(), js=None, max_in_flight=3)  # type: ignore[arg-type]
    assert [c.campaign_id for c in loop.fairly(book.campaigns("running"))] == ["behind", "ahead"]
