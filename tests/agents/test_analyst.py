"""The analyst: a comparison table built in code, a report checked against it, a card with each section once."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.analyst import gallery
from services.analyst.comparison import claim, contradictions
from services.analyst.handlers import Analyst, on_replicate_trained
from services.analyst.handlers import on_train_succeeded as analyse
from shared.bus import Delivery
from shared.events import AnalysisCreated, ComparisonRow, CurvePoint, ReplicateTrained
from tests.agents.conftest import MemoryWorld, scripted
from tests.agents.lineage import baselines, child, envelope

DELIVERY = Delivery(stream_seq=1, deliveries=1, subject="test")
MEASURED = {"deltanet": (4.957, 4.959), "gla": (4.878, 4.886)}
TASKS = {"deltanet": {"mqar": (0.30, 0.31), "piqa": (0.52, 0.55)}, "gla": {"mqar": (0.40, 0.41), "piqa": (0.55, 0.5)}}
HONEST = {"what_worked": "The halved write kept training stable.",
          "what_failed": "It is worse than its parent deltanet: val loss 5.038 against 4.958.",
          "why": "Halving beta slows how fast new associations overwrite old ones.",
          "next": "Try a learned scale on beta instead of a fixed half."}


@pytest.fixture
def analyst_world(world: MemoryWorld) -> MemoryWorld:
    events = baselines(MEASURED, TASKS)
    world.apply(*events)
    return world


async def analysed(world: MemoryWorld, tmp_path: Path, *replies: dict[str, str]) -> tuple[AnalysisCreated, list]:
    proposal, run = child("exp-half", "baseline:deltanet", 5.038, benchmarks={"mqar": 0.33, "piqa": 0.51},
                          name="DeltaNetWithHalfBeta")
    world.apply(proposal, run)
    llm, backend = scripted(*replies)
    (analysis,) = await analyse(Analyst(llm=llm, memory=world.client, gallery=tmp_path), run, DELIVERY)
    assert isinstance(analysis, AnalysisCreated)
    return analysis, backend.seen


async def test_the_table_is_built_in_code_and_the_card_has_each_section_once(
        analyst_world: MemoryWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plotted: list[tuple[dict, dict]] = []
    real_plot = gallery.plot_curves
    monkeypatch.setattr(gallery, "plot_curves", lambda path, curves, baselines: (
        plotted.append((curves, baselines)), real_plot(path, curves, baselines)))
    analysis, seen = await analysed(analyst_world, tmp_path, HONEST)
    # The loss plot: the run, its parent (a baseline: its first seed's curve) and every baseline of the profile.
    ((curves, baseline_curves),) = plotted
    assert set(curves) == {"this run", "parent deltanet"} and all(curves.values())
    assert set(baseline_curves) == {"deltanet", "gla"} and all(baseline_curves.values())
    assert len(seen) == 1 and not analysis.removed_statements
    assert [s.title for s in analysis.sections] == ["What worked", "What failed", "Why", "What to try next"]
    rows = {row.role: row for row in analysis.comparison}
    assert rows["this run"].val_loss == pytest.approx(5.038) and rows["this run"].tasks == {"mqar": 0.33}
    assert rows["parent"].id == "baseline:deltanet" and rows["parent"].run_is == "worse"
    assert rows["best baseline"].name == "gla" and rows["parent"].seeds == 2
    assert analysis.signal_tasks == ("mqar",)  # piqa does not separate the baselines
    prompt = seen[0][-1]["content"]
    assert "Against its parent deltanet the run is worse beyond seed noise" in prompt
    assert "The code differs from the parent's in 2 changed lines." in prompt
    card = (Path(analysis.gallery_path) / "MODEL_CARD.md").read_text()
    headings = [line for line in card.splitlines() if line.startswith("## ")]
    assert len(headings) == len(set(headings)) and headings.count("## Measurements") == 1
    assert card.count("| DeltaNetWithHalfBeta |") == 1 and "Counted in the fitness: mqar" in card
    assert "piqa) do not separate the baselines here" in card
    assert (Path(analysis.gallery_path) / "loss.png").read_bytes()[:4] == b"\x89PNG"


async def test_a_report_that_contradicts_the_table_is_sent_back_once(analyst_world: MemoryWorld,
                                                                    tmp_path: Path) -> None:
    wrong = {**HONEST, "what_worked": "The change did not introduce any new features. It beat its parent clearly.",
             "what_failed": "Nothing."}
    still_wrong = {**HONEST, "what_worked": "It is better than its parent."}
    analysis, seen = await analysed(analyst_world, tmp_path, wrong, still_wrong)
    retry = seen[1][-1]["content"]
    assert 'you wrote "The change did not introduce any new features."' in retry and "code differs" in retry
    assert 'you wrote "It beat its parent clearly."' in retry and "the run is worse" in retry
    assert analysis.removed_statements == ("It is better than its parent.",)
    assert "better than its parent" not in analysis.sections[0].body
    card = (Path(analysis.gallery_path) / "MODEL_CARD.md").read_text()
    assert "## Removed from the analysis" in card and "- It is better than its parent." in card


async def test_a_second_seed_updates_the_table_and_the_card_without_the_llm(analyst_world: MemoryWorld,
                                                                           tmp_path: Path) -> None:
    first, _ = await analysed(analyst_world, tmp_path, HONEST)
    analyst_world.apply(first)
    replicate = ReplicateTrained(**envelope("exp-half"), seed=1, profile="smoke", succeeded=True, val_loss=5.044,
                                 benchmarks={"mqar": 0.35}, curve=(CurvePoint(step=10, tokens=20_480, loss=5.04),))
    analyst_world.apply(replicate)
    llm, backend = scripted()
    (revised,) = await on_replicate_trained(Analyst(llm=llm, memory=analyst_world.client, gallery=tmp_path),
                                            replicate, DELIVERY)
    assert isinstance(revised, AnalysisCreated) and not backend.seen and revised.llm is None
    assert revised.sections == first.sections
    run = revised.comparison[0]
    assert run.seeds == 2 and run.val_loss == pytest.approx(5.041) and run.tasks == {"mqar": pytest.approx(0.34)}
    card = (Path(revised.gallery_path) / "MODEL_CARD.md").read_text()
    assert "5.0410 ± 0.0042 (2 seeds)" in card and "means over 2 seeds" in card


def row(role: str, run_is: str = "", name: str = "deltanet") -> ComparisonRow:
    return ComparisonRow(role=role, id=name, name=name, val_loss=5.0, run_is=run_is)


@pytest.mark.parametrize(("sentence", "said"), [
    ("It improved on its parent.", "better"), ("It did not improve on the parent.", "not better"),
    ("Val loss is higher than the parent's.", "worse"), ("It is not worse than deltanet.", None),
    ("The gate is simple.", None),
])
def test_what_a_sentence_claims(sentence: str, said: str | None) -> None:
    assert claim(sentence) == said


def test_only_sentences_about_the_parent_are_held_to_its_verdict() -> None:
    rows = [row("this run"), row("parent", "within noise")]
    diff = "--- a\n+++ b\n-x = 1\n+x = 2\n"
    found = contradictions("The gate improved stability. It beat its parent. The code is unchanged.", rows, diff)
    assert [statement for statement, _ in found] == ["It beat its parent.", "The code is unchanged."]
    assert contradictions("It is within noise of deltanet.", rows, diff) == []
    assert contradictions("It is identical to its parent.", rows, "") == []  # a promoted copy is unchanged


async def test_a_promotions_parent_at_another_profile_is_shown_but_not_compared(analyst_world: MemoryWorld,
                                                                               tmp_path: Path) -> None:
    analyst_world.apply(*baselines({"deltanet": (4.40, 4.41), "gla": (4.30, 4.31)}, profile="cpu"))
    first, _ = await analysed(analyst_world, tmp_path, HONEST)
    analyst_world.apply(first)
    proposal, run = child("exp-half@cpu", "exp-half", 4.35, code=proposal_code(analyst_world), profile="cpu")
    analyst_world.apply(proposal, run)
    llm, backend = scripted(HONEST)
    (analysis,) = await analyse(Analyst(llm=llm, memory=analyst_world.client, gallery=tmp_path), run, DELIVERY)
    assert isinstance(analysis, AnalysisCreated)
    parent = next(row for row in analysis.comparison if row.id == "exp-half")
    assert parent.role == "parent (at smoke)" and parent.run_is == ""
    best = next(row for row in analysis.comparison if row.role == "best baseline")
    assert best.name == "gla" and best.run_is == "worse"  # 4.35 against gla's 4.305 at cpu
    assert "The code is the parent's, unchanged." in backend.seen[0][-1]["content"]


def proposal_code(world: MemoryWorld) -> str:
    return world.db["experiments"].find_one({"_id": "exp-half"})["code"]
