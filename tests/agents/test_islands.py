"""Island sampling: proposals join islands in turn and draw their parents from their own island, with migrants."""

from __future__ import annotations

import msgspec

from services.memory.queries import island_of
from services.researcher.proposer import Proposer, island_for
from shared.events import NO_ISLAND, FitnessComputed, ProposalCreated
from shared.mixer.baselines import BASELINES
from tests.agents.conftest import MemoryWorld, scripted
from tests.agents.lineage import baselines, child, envelope
from tests.agents.test_learned_moves import CAMPAIGN, IDEA
from tests.agents.test_researcher import GOOD_CODE


def ranked(world: MemoryWorld, experiment: str, island: int, fitness: float) -> None:
    proposal, run = child(experiment, "baseline:deltanet", 4.9)
    world.apply(msgspec.structs.replace(proposal, island=island, campaign_id=CAMPAIGN.campaign_id),
                msgspec.structs.replace(run, campaign_id=CAMPAIGN.campaign_id),
                FitnessComputed(**envelope(experiment, CAMPAIGN.campaign_id), loss_term=fitness,  # type: ignore[arg-type]
                                benchmark_term=0.0, judge_term=0.0, total=fitness))


def test_proposals_join_the_islands_in_turn_and_every_mth_is_a_migrant() -> None:
    assert [island_for(i, 3, 4) for i in range(8)] == [(0, False), (1, False), (2, False), (0, True),
                                                       (1, False), (2, False), (0, False), (1, True)]
    assert island_for(5, 0, 4) == (NO_ISLAND, False)


def test_an_experiment_without_an_island_has_a_fixed_one() -> None:
    assert island_of({"_id": "e1", "island": 3}, 2) == 1
    assert island_of({"_id": "e1"}, 4) == island_of({"_id": "e1", "island": NO_ISLAND}, 4) in range(4)


async def test_parents_come_from_the_proposals_own_island_and_a_migrants_from_anywhere(world: MemoryWorld) -> None:
    world.apply(*baselines({"deltanet": (5.00, 5.02)}))
    for n in range(4):
        ranked(world, f"even-{n}", 0, 1.0 + n)
        ranked(world, f"odd-{n}", 1, 10.0 + n)
    for index in range(6):
        sample = await world.client.sample_parents(CAMPAIGN.campaign_id, seed=index, island=index % 2, islands=2)
        assert sample.parent is not None and sample.parent.id.startswith("even" if index % 2 == 0 else "odd")
        assert all(r.id.startswith("even" if index % 2 == 0 else "odd") for r in sample.references)
    drawn = {(await world.client.sample_parents(CAMPAIGN.campaign_id, seed=s)).parent.id for s in range(12)}  # type: ignore[union-attr]
    assert {d[:3] for d in drawn} == {"eve", "odd"}  # the whole ranking, as a migrant sees it

    llm, _ = scripted(IDEA, GOOD_CODE, IDEA, GOOD_CODE)
    agent = Proposer(llm, world.client, BASELINES, "linear_attention", revisions=0, moves=(), islands=2,
                     migration_every=0)
    events = await agent.propose(CAMPAIGN, index=1)
    proposal = events[-1]
    assert isinstance(proposal, ProposalCreated) and proposal.island == 1 and proposal.parent_ids[0].startswith("odd")
