"""The query API over a real nx-27017 holding the projected history: every endpoint, bad input, 404s."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pymongo.database import Database

from services.engineer.handlers import Engineer
from services.memory.api import MemoryApiDeps, create_router
from services.memory.cognition import starter_update
from services.memory.projection import Projector
from services.memory.queries import campaign_baselines, parent_pool, sample_parents
from services.memory.vectors import HashingEmbedder, VectorStore
from shared.events import CampaignStarted, DebugPatched, ProposalCreated, ProposalRejected, TrainSucceeded
from shared.memory_client import MemoryClient, NotYetProjected
from tests.memory.history import PROFILE, apply_updates, baseline_events, build_history, numbered

HISTORY = numbered(build_history())


@pytest.fixture(scope="module")
def client(module_db: Database) -> Iterator[TestClient]:
    vectors = VectorStore(HashingEmbedder())
    projector = Projector(module_db)
    for seq, event in HISTORY:
        projector.apply(event, seq)
        vectors.apply(event, seq)
    apply_updates([starter_update()], projector, vectors)
    for event in [*baseline_events(PROFILE, "deltanet"), *baseline_events(PROFILE, "gla", (3.9,), (0.4,), False)]:
        projector.apply(event, projector.last_seq() + 1)
    app = FastAPI()
    app.include_router(create_router(MemoryApiDeps(module_db, vectors, projected_seq=projector.last_seq)))
    with TestClient(app) as test_client:
        yield test_client


def _trained_ids() -> list[str]:
    return sorted({e.experiment_id for _, e in HISTORY if isinstance(e, TrainSucceeded)})


def test_list_filters_sorts_and_paginates(client: TestClient) -> None:
    everything = client.get("/experiments", params={"limit": 200}).json()
    proposals = {e.experiment_id for _, e in HISTORY if isinstance(e, ProposalCreated)}
    assert everything["total"] == len(proposals) == len(everything["items"])
    times = [item["created_at"] for item in everything["items"]]
    assert times == sorted(times, reverse=True)
    trained = client.get("/experiments", params={"status": "trained", "sort": "fitness", "limit": 5}).json()
    assert trained["total"] == len(_trained_ids())
    nothing = client.get("/experiments", params={"campaign_id": "no-such-campaign"}).json()
    assert nothing == {**nothing, "total": 0, "items": []}
    fitness = [item["fitness"] for item in trained["items"]]
    assert len(fitness) == 5 and fitness == sorted(fitness, reverse=True)
    page2 = client.get("/experiments", params={"status": "trained", "sort": "fitness", "limit": 5, "offset": 5})
    assert not {i["id"] for i in page2.json()["items"]} & {i["id"] for i in trained["items"]}
    ascending = client.get("/experiments", params={"sort": "time", "order": "asc", "limit": 1}).json()
    assert ascending["items"][0]["created_at"] == min(times)


@pytest.mark.parametrize("params", [
    {"status": "exploded"}, {"sort": "size"}, {"limit": 0}, {"limit": 10_000}, {"offset": -1}, {"order": "up"},
])
def test_list_rejects_bad_input(client: TestClient, params: dict[str, object]) -> None:
    response = client.get("/experiments", params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == next(iter(params))


def test_one_experiment_with_lineage(client: TestClient) -> None:
    patched = {e.experiment_id for _, e in HISTORY if isinstance(e, DebugPatched)}
    with_children = [e for _, e in HISTORY if isinstance(e, ProposalCreated) and e.parent_ids[0].startswith("camp")]
    child = with_children[0]
    body = client.get(f"/experiments/{child.parent_ids[0]}").json()
    assert child.experiment_id in {c["id"] for c in body["lineage"]["children"]}
    body = client.get(f"/experiments/{child.experiment_id}").json()
    assert [p["id"] for p in body["lineage"]["parents"]] == list(child.parent_ids)
    siblings = {e.experiment_id for e in with_children if e.parent_ids[0] == child.parent_ids[0]} - {
        child.experiment_id}
    assert {s["id"] for s in body["lineage"]["siblings"]} == siblings
    first = next(e for _, e in HISTORY if isinstance(e, ProposalCreated))
    root = client.get(f"/experiments/{first.experiment_id}").json()
    assert root["lineage"]["missing_parents"] == ["baseline:linear_attention"]
    one = client.get(f"/experiments/{sorted(patched & set(_trained_ids()))[0]}").json()["experiment"]
    assert len(one["code_versions"]) >= 2 and one["train"]["curve"][0][0] == 0
    assert one["fitness_terms"]["total"] == pytest.approx(one["fitness"])


def test_missing_experiment_is_404(client: TestClient) -> None:
    response = client.get("/experiments/no-such-experiment")
    assert response.status_code == 404 and "no-such-experiment" in response.json()["detail"]


def test_two_tier_parent_sampling_is_deterministic(client: TestClient) -> None:
    ranked = client.get("/experiments", params={"sort": "fitness", "status": "trained", "limit": 50}).json()["items"]
    top10, band = {r["id"] for r in ranked[:10]}, {r["id"] for r in ranked[10:50]}
    first = client.get("/sample/parents", params={"seed": 3, "references": 4}).json()
    assert first == client.get("/sample/parents", params={"seed": 3, "references": 4}).json()
    assert first["parent"]["id"] in top10 and first["ranked"] == len(ranked)
    assert len(first["references"]) == 4 and {r["id"] for r in first["references"]} <= band
    seen = {client.get("/sample/parents", params={"seed": s}).json()["parent"]["id"] for s in range(12)}
    assert len(seen) > 1


def test_ucb_parent_sampling(client: TestClient) -> None:
    body = client.get("/sample/parents", params={"strategy": "ucb", "seed": 1, "exploration": 0.0}).json()
    best = client.get("/experiments", params={"sort": "fitness", "limit": 1}).json()["items"][0]
    assert body["parent"]["id"] == best["id"]  # no exploration: pure exploitation
    explore = client.get("/sample/parents", params={"strategy": "ucb", "exploration": 5.0}).json()
    assert explore["ucb_scores"][explore["parent"]["id"]] == max(explore["ucb_scores"].values())


@pytest.mark.parametrize("params", [{"strategy": "greedy"}, {"references": -1}, {"seed": "x"}])
def test_sampling_rejects_bad_input(client: TestClient, params: dict[str, object]) -> None:
    assert client.get("/sample/parents", params=params).status_code == 422


def test_sampling_with_nothing_ranked_returns_no_parent(client: TestClient) -> None:
    body = client.get("/sample/parents", params={"campaign_id": "camp-none"}).json()
    assert body["parent"] is None and body["references"] == [] and body["ranked"] == 0


def test_a_campaigns_parent_pool_keeps_its_profiles_baselines(client: TestClient) -> None:
    """Ranked beside the runs, not replaced by the first one: a campaign's early weak run is not every parent."""
    runs = client.get("/experiments", params={"campaign_id": "camp-a", "sort": "fitness", "status": "trained",
                                              "limit": 50}).json()["items"]
    ranked = {r["id"] for r in runs if r["fitness"] is not None and not r["awaiting_replicate"]}
    body = client.get("/sample/parents", params={"campaign_id": "camp-a", "strategy": "ucb",
                                                 "exploration": 0.0}).json()
    assert set(body["ucb_scores"]) == ranked | {"baseline:deltanet", "baseline:gla"}
    assert body["ranked"] == len(ranked) + 2
    anywhere = client.get("/sample/parents", params={"strategy": "ucb", "exploration": 0.0}).json()
    assert not any(ref.startswith("baseline:") for ref in anywhere["ucb_scores"])  # no campaign: no profile


def test_a_baseline_counts_the_campaigns_proposals_made_from_it(db: Database) -> None:
    history = build_history(experiments=2, campaign="c1")
    started = next(e for e in history if isinstance(e, CampaignStarted))
    proposals = [e for e in history if isinstance(e, ProposalCreated)]
    from_gla = msgspec.structs.replace(proposals[0], parent_ids=("baseline:gla", "baseline:deltanet"))
    referenced = msgspec.structs.replace(proposals[1], parent_ids=("baseline:deltanet", "baseline:gla"))
    rejected = ProposalRejected(**{**{f: getattr(from_gla, f) for f in ("occurred_at", "producer", "campaign_id")},
                                   "event_id": "rejected-1", "experiment_id": "c1-rejected"},
                                reason="duplicate", detail="", parent_ids=("baseline:gla",))
    Projector(db).apply_all(numbered([started, *baseline_events(PROFILE, "deltanet"),
                                      *baseline_events(PROFILE, "gla", (3.9, 3.92), (0.4, 0.41), False),
                                      from_gla, referenced, rejected]))
    entries = campaign_baselines(db, "c1")
    counts = {entry["_id"]: entry["n_children"] for entry in entries}
    assert {"baseline:deltanet": 1, "baseline:gla": 1}.items() <= counts.items()  # first parents, none rejected
    unranked = {entry["name"] for entry in entries if entry["fitness_total"] is None}
    assert unranked == {"gated_deltanet", "linear_attention", "mamba2", "retnet"}  # in the pool, not measured
    pool = parent_pool(db, "c1", limit=50)
    assert [d["name"] for d in pool[:2]] == ["gla", "deltanet"] and {d["name"] for d in pool[2:]} == unranked
    sample = sample_parents(db, campaign_id="c1", islands=3, island=2, seed=1)
    assert sample.ranked == 2 and sample.parent is not None and sample.parent["baseline"]  # on every island
    ucb = sample_parents(db, campaign_id="c1", strategy="ucb", exploration=0.0)
    assert ucb.parent is not None and ucb.parent["name"] == "gla" and set(ucb.ucb_scores) == {
        "baseline:gla", "baseline:deltanet"}
    assert campaign_baselines(db, "no-such-campaign") == []


@pytest.mark.parametrize("index", ["motivations", "code", "analyses", "failures", "cognition"])
def test_search_every_index(client: TestClient, index: str) -> None:
    response = client.get(f"/search/{index}", params={"q": "gate the delta rule decay NaN", "k": 3})
    assert response.status_code == 200
    hits = response.json()["hits"]
    assert 1 <= len(hits) <= 3 and all(h["label"] for h in hits)
    if index == "cognition":
        assert hits[0]["id"].startswith("starter:") and hits[0]["source"]


def test_search_finds_the_motivation(client: TestClient) -> None:
    hits = client.get("/search/motivations", params={"q": "short causal depthwise convolution on keys"}).json()["hits"]
    assert hits[0]["label"].startswith("short-conv")


def test_search_bad_input(client: TestClient) -> None:
    unknown = client.get("/search/papers", params={"q": "x"})
    assert unknown.status_code == 404 and "motivations" in unknown.json()["detail"]
    assert client.get("/search/code").status_code == 422
    assert client.get("/search/code", params={"q": ""}).status_code == 422
    assert client.get("/search/code", params={"q": "x", "k": 0}).status_code == 422


def test_failure_search_returns_fixes(client: TestClient) -> None:
    body = client.get("/failures/search", params={"q": "loss is NaN at step 37", "k": 3, "only_fixed": True}).json()
    assert body["hits"] and all(h["fix"] is not None for h in body["hits"])
    assert body["hits"][0]["error_kind"] == "nan"
    assert body["hits"][0]["fix"]["attempt"] == body["hits"][0]["attempt"] + 1
    assert client.get("/failures/search", params={"q": ""}).status_code == 422
    assert client.get("/failures/search").status_code == 422


def test_stats(client: TestClient) -> None:
    body = client.get("/stats").json()
    assert body["experiments"] == sum(body["by_status"].values())
    assert body["by_status"]["trained"] == len(_trained_ids())
    assert body["yield"] == pytest.approx(len(_trained_ids()) / body["experiments"])
    best = client.get("/experiments", params={"sort": "fitness", "limit": 1}).json()["items"][0]
    assert body["best_experiment_id"] == best["id"] and body["best_fitness"] == pytest.approx(best["fitness"])
    assert body["spend"]["cpu_core_seconds"] > 0 and body["spend"]["prompt_tokens"] > 0
    assert 0 < body["fix_rate"] < 1 and body["patches"] <= body["failures"]
    assert body["campaigns"][0]["_id"] == "camp-a"
    scoped = client.get("/stats", params={"campaign_id": "camp-a"}).json()
    assert scoped["experiments"] == body["experiments"]
    assert client.get("/stats", params={"campaign_id": "camp-b"}).json()["experiments"] == 0


def test_search_without_a_vector_store_is_503(module_db: Database) -> None:
    app = FastAPI()
    app.include_router(create_router(MemoryApiDeps(module_db, None)))
    with TestClient(app) as bare:
        assert bare.get("/search/code", params={"q": "x"}).status_code == 503


def test_behaviours_of_the_trained_mixers_at_a_profile(client: TestClient) -> None:
    items = client.get("/behaviours", params={"profile": PROFILE}).json()["items"]
    assert [item["experiment_id"] for item in items] == _trained_ids()
    assert all(len(item["behaviour"]) == 2 and item["name"] for item in items)
    assert client.get("/behaviours", params={"profile": "elsewhere"}).json()["items"] == []
    assert client.get("/behaviours").status_code == 422


def engineer_with(memory: MemoryClient) -> Engineer:
    return Engineer(corpus_dir=Path("corpus"), runs_dir=Path("runs"),
                    default_profile=PROFILE, threads=1, memory_bytes=1 << 30, memory=memory)


async def test_the_engineer_compares_with_every_trained_mixer_but_its_own(client: TestClient) -> None:
    memory = MemoryClient("http://memory", transport=httpx.ASGITransport(app=client.app))
    own, *others = _trained_ids()
    known = await engineer_with(memory).known_behaviours(PROFILE, own)
    await memory.aclose()
    assert len(known) == len(others) and not [label for label in known if own in label]
    # Without memory the candidate is still compared with the baselines (in the runner), not blocked.
    unreachable = MemoryClient("http://127.0.0.1:9", timeout_s=2)
    assert await engineer_with(unreachable).known_behaviours(PROFILE, own) == {}
    await unreachable.aclose()


async def test_a_read_as_of_a_later_sequence_waits_for_the_projection(client: TestClient) -> None:
    experiment = _trained_ids()[0]
    now = len(HISTORY)  # the projection holds the whole history (and the facts after it)
    assert client.get(f"/experiments/{experiment}", params={"as_of": now}).status_code == 200
    late = client.get(f"/experiments/{experiment}", params={"as_of": 10**9})
    assert late.status_code == 409 and "not yet projected" in late.json()["detail"]
    memory = MemoryClient("http://memory", transport=httpx.ASGITransport(app=client.app))
    with pytest.raises(NotYetProjected):
        await memory.experiment(experiment, as_of=10**9)
    assert (await memory.experiment(experiment, as_of=now)) is not None
    await memory.aclose()


def test_the_baselines_of_a_profile(client: TestClient) -> None:
    body = client.get(f"/baselines/{PROFILE}").json()
    assert body["reference"]["mixer"] == "deltanet" and body["reference"]["seeds"] == 2
    assert body["reference"]["val_loss_mean"] == pytest.approx(4.0)
    assert [m["mixer"] for m in body["mixers"]] == ["deltanet", "gla"]
    assert body["mixers"][1]["val_loss_std"] is None  # one seed: no noise floor yet
    assert body["fitness_ready"] is True
    # gla on one seed: the noise floor is deltanet's spread, and the best baseline is the best one measured on two
    # seeds (one lucky seed does not make a baseline best).
    assert body["best"]["mixer"] == "deltanet" and body["noise_sd"] == pytest.approx(body["reference"]["val_loss_std"])
    # Three seeds in all leave one degree of freedom for the seed noise: no task is shown to carry signal yet.
    assert set(body["signal"]) == {"mqar", "piqa"} and body["signal_tasks"] == []
    assert body["signal"]["mqar"]["p"] > 0.05 and "within seed noise" in body["signal"]["mqar"]["reason"]
    assert client.get("/baselines/verify").json() == {"profile": "verify", "reference": None, "fitness_ready": False,
                                                      "mixers": [], "noise_sd": None, "best": None, "signal": {},
                                                      "signal_tasks": []}


def test_openapi_documents_every_endpoint(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/experiments", "/experiments/{experiment_id}", "/sample/parents", "/search/{index}",
            "/failures/search", "/stats", "/behaviours", "/baselines/{profile}"} <= set(paths)


def test_failure_search_puts_fixes_that_worked_first_same_signature_leading(client: TestClient,
                                                                           module_db: Database) -> None:
    worked = module_db["failures"].find_one({"fix_worked": True})
    assert worked is not None and worked["signature"].startswith(f"{worked['error_kind']}: ")
    params = {"q": "an unrelated query about nothing in particular", "k": 4, "only_fixed": True,
              "signature": worked["signature"]}
    hits = client.get("/failures/search", params=params).json()["hits"]
    assert hits[0]["signature"] == worked["signature"] and hits[0]["fix_worked"] is True
    order = [hit["fix_worked"] is not True for hit in hits]
    assert order == sorted(order)  # every fix that worked before any that did not (or is not retrained yet)
