"""The judge: performance from the measurements, the LLM's two scores against anchors that show measured numbers."""

from __future__ import annotations

import pytest

from services.judge.handlers import on_replicate_trained
from services.judge.handlers import on_train_succeeded as judge
from services.judge.scorer import LlmScorer
from shared.bus import Delivery
from shared.events import JudgeScored, ReplicateTrained
from shared.judging import performance, position
from shared.noise import Measured
from tests.agents.conftest import MemoryWorld, scripted
from tests.agents.lineage import baselines, child, envelope

DELIVERY = Delivery(stream_seq=1, deliveries=1, subject="test")
# What a fresh campaign at cpu measured (the numbers), with the noise of two seeds each.
MEASURED = {"linear_attention": (5.301, 5.309), "deltanet": (4.957, 4.959), "gla": (4.878, 4.886)}
TASKS = {"deltanet": {"mqar": (0.30, 0.31), "piqa": (0.52, 0.55)}, "gla": {"mqar": (0.40, 0.41), "piqa": (0.55, 0.5)},
         "linear_attention": {"mqar": (0.10, 0.12), "piqa": (0.5, 0.53)}}
REPLY = {"innovation": 6, "complexity": 6, "rationale": "a new write strength"}


async def judged(world: MemoryWorld, parent: str, val_loss: float, experiment: str = "exp-run") -> \
        tuple[JudgeScored, str]:
    proposal, run = child(experiment, parent, val_loss, benchmarks={"mqar": 0.33, "piqa": 0.51})
    world.apply(proposal, run)
    llm, backend = scripted(REPLY)
    (scored,) = await judge(LlmScorer(llm, world.client), run, DELIVERY)
    assert isinstance(scored, JudgeScored)
    return scored, backend.seen[0][-1]["content"]


@pytest.fixture
def measured_world(world: MemoryWorld) -> MemoryWorld:
    world.apply(*baselines(MEASURED, TASKS))
    return world


def anchor_of(mixer: str) -> int:
    losses = {name: Measured.of(values) for name, values in MEASURED.items()}
    return round(position(losses[mixer].mean, losses, None))  # type: ignore[union-attr, arg-type]


async def test_a_run_worse_than_its_parent_beyond_noise_scores_below_the_parents_anchor(
        measured_world: MemoryWorld) -> None:
    scored, prompt = await judged(measured_world, "baseline:deltanet", 5.038)  # the DeltaNetWithNegativeBeta
    assert scored.performance < anchor_of("deltanet")
    assert "worse than deltanet" in scored.rationale and "4.9580" in scored.rationale
    # The measured numbers stand beside the anchors, the parent's loss is never "unknown".
    assert "4.9580 ± 0.0014 (2 seeds)" in prompt and "unknown" not in prompt
    assert "| DeltaNet (delta rule) |" in prompt and "mqar" in prompt and "piqa" not in prompt.split("Motivation")[0]


async def test_a_run_better_than_its_parent_beyond_noise_scores_above_it(measured_world: MemoryWorld) -> None:
    scored, _ = await judged(measured_world, "baseline:deltanet", 4.93)
    assert scored.performance > anchor_of("deltanet")
    assert "better than deltanet" in scored.rationale


async def test_within_noise_of_the_parent_scores_as_the_parent(measured_world: MemoryWorld) -> None:
    scored, _ = await judged(measured_world, "baseline:deltanet", 4.9585)
    assert scored.performance == anchor_of("deltanet") and "within noise of deltanet" in scored.rationale


async def test_the_parent_experiment_is_measured_too(measured_world: MemoryWorld) -> None:
    first, _ = await judged(measured_world, "baseline:gla", 4.80, experiment="exp-parent")
    scored, prompt = await judged(measured_world, "exp-parent", 4.87, experiment="exp-child")
    assert scored.performance < first.performance and "worse than exp-parent 4.8000" in scored.rationale
    assert "| parent: exp-parent | 4.8000 (1 seed) |" in prompt


async def test_the_llm_gives_innovation_and_complexity_and_code_the_weights(measured_world: MemoryWorld) -> None:
    proposal, run = child("exp-w", "baseline:deltanet", 4.95)
    measured_world.apply(proposal, run)
    llm, backend = scripted({"innovation": 11, "complexity": 5, "rationale": "x"},
                            {"innovation": 5, "complexity": 4, "rationale": "solid"})
    (scored,) = await judge(LlmScorer(llm, measured_world.client), run, DELIVERY)
    assert isinstance(scored, JudgeScored) and (scored.innovation, scored.complexity) == (5, 4)
    assert scored.weighted == pytest.approx(0.3 * scored.performance + 0.25 * 5 + 0.45 * 4)
    assert "must be an integer from 1 to 10" in backend.seen[1][-1]["content"]
    asked = backend.seen[0][-1]["content"].split("Reply with JSON")[1].splitlines()[0]
    assert "innovation" in asked and "performance" not in asked


def test_the_score_places_a_loss_among_the_baselines() -> None:
    losses = {name: Measured.of(values) for name, values in MEASURED.items()}
    floor = 0.004
    assert position(5.305, losses, floor) == pytest.approx(3.0, abs=0.02)  # at the worst baseline
    assert position(4.882, losses, floor) == pytest.approx(7.0, abs=0.02)  # at the best
    assert position(4.0, losses, floor) == 10 and position(7.0, losses, floor) == 1  # capped
    assert position(float("nan"), losses, floor) == 1  # a diverged run
    assert position(4.9, losses, floor) > position(4.95, losses, floor) > position(5.1, losses, floor)


def test_without_a_noise_estimate_the_parent_comparison_says_so() -> None:
    one_seed = Measured(4.9, None, 1)
    standing = performance(Measured(5.0, None, 1), one_seed, {}, None, parent_name="deltanet")
    assert "not comparable" in standing.reason and 1 <= standing.score <= 10


async def test_a_second_seed_moves_the_performance_without_asking_the_llm(measured_world: MemoryWorld) -> None:
    first, _ = await judged(measured_world, "baseline:deltanet", 4.93, experiment="exp-lucky")
    measured_world.apply(first)
    # The second seed lands within noise of the parent: the mean (4.946 ± 0.023) no longer beats it.
    replicate = ReplicateTrained(**envelope("exp-lucky"), seed=1, profile="smoke", succeeded=True, val_loss=4.962)
    measured_world.apply(replicate)
    llm, backend = scripted()
    (rescored,) = await on_replicate_trained(LlmScorer(llm, measured_world.client), replicate, DELIVERY)
    assert isinstance(rescored, JudgeScored) and not backend.seen and rescored.llm is None
    assert rescored.performance < first.performance and "2 seeds" in rescored.rationale
    assert (rescored.innovation, rescored.complexity) == (first.innovation, first.complexity)
    assert rescored.rationale.endswith(REPLY["rationale"])
    failed = ReplicateTrained(**envelope("exp-lucky"), seed=2, profile="smoke", succeeded=False, error_kind="nan")
    assert await on_replicate_trained(LlmScorer(llm, measured_world.client), failed, DELIVERY) == ()


async def test_a_promotion_is_placed_among_its_own_profiles_baselines(measured_world: MemoryWorld) -> None:
    """A run promoted to cpu has its smoke parent's code, but its loss is on another scale: no parent verdict."""
    measured_world.apply(*baselines({"deltanet": (4.40, 4.41), "gla": (4.30, 4.31)}, profile="cpu"))
    await judged(measured_world, "baseline:deltanet", 4.93, experiment="exp-small")
    proposal, run = child("exp-small@cpu", "exp-small", 4.35, profile="cpu")
    measured_world.apply(proposal, run)
    llm, _ = scripted(REPLY)
    (scored,) = await judge(LlmScorer(llm, measured_world.client), run, DELIVERY)
    assert isinstance(scored, JudgeScored) and "than exp-small" not in scored.rationale
    assert "baselines from deltanet 4.4050" in scored.rationale and 3 <= scored.performance <= 7


def test_a_run_within_noise_of_its_parent_scores_as_the_parent_whatever_its_position() -> None:
    """The lab's gla variant at smoke: 5.374 against gla 5.266 ± 0.025 with a seed noise of 0.067 is 1.5 combined
    sd away, a lower position among the baselines, but no measurable difference."""
    losses = {"linear_attention": Measured(5.9804, 0.0024, 2), "gla": Measured(5.2661, 0.0249, 2),
              "mamba2": Measured(4.9849, 0.0588, 2)}
    standing = performance(Measured(5.3743, None, 1), losses["gla"], losses, 0.0667, parent_name="gla")
    assert standing.score == round(position(5.2661, losses, 0.0667)) and "within noise of gla" in standing.reason
