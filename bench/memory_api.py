"""Memory API latency at scale: p50/p95 of parent sampling and similarity search over N experiments.

    python bench/memory_api.py [--experiments 10000] [--requests 200] [--embedder minilm|hashing]
                               [--project-with hashing]

Projects a synthetic campaign of N experiments into a real nx-27017 store and FAISS, serves the real API with
uvicorn on loopback, and times requests from a client. Prints the percentiles; asserts nothing.

``--project-with hashing`` fills the indexes with the hashing embedder (seconds instead of a quarter of an hour of
MiniLM at 10 k experiments) while queries are still embedded with ``--embedder``: a flat FAISS index costs the same
whatever its vectors hold, so the latencies are those of a MiniLM-projected memory of that size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import uvicorn
from fastapi import FastAPI

from services.memory.api import MemoryApiDeps, create_router
from services.memory.handlers import Memory, apply_pairs
from services.memory.projection import Projector
from services.memory.vectors import HashingEmbedder, MiniLMEmbedder, VectorStore
from shared.embedded import exit_on_sigterm, free_port, start_mongo
from shared.store import mongo_client
from tests.memory.history import build_history, numbered

QUERIES = ["gated delta rule with chunked state", "loss NaN after exp overflow in decay", "retention with decay",
           "short convolution before the keys", "normalise keys to keep the state bounded"]


def percentiles(samples: list[float]) -> str:
    cuts = statistics.quantiles(samples, n=100)
    return f"p50 {cuts[49] * 1000:7.1f} ms   p95 {cuts[94] * 1000:7.1f} ms"


def timed(http: httpx.Client, path: str, params: dict[str, object], n: int) -> list[float]:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        response = http.get(path, params={k: (v if v != "{i}" else i) for k, v in params.items()})
        samples.append(time.perf_counter() - started)
        response.raise_for_status()
    return samples


def make_embedder(name: str) -> MiniLMEmbedder | HashingEmbedder:
    return MiniLMEmbedder() if name == "minilm" else HashingEmbedder()


def main(experiments: int, requests: int, embedder_name: str, project_with: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mongo = start_mongo(Path(tmp) / "mongo", free_port())
        try:
            db = mongo_client(f"mongodb://127.0.0.1:{mongo.port}")["bench"]
            memory = Memory(Projector(db), VectorStore(make_embedder(project_with), Path(tmp) / "vectors"))
            started = time.perf_counter()
            pairs = numbered(build_history(seed=2, experiments=experiments, in_flight=8))
            apply_pairs(memory, pairs)
            print(f"projected {experiments:,} experiments ({len(pairs):,} events) in "
                  f"{time.perf_counter() - started:.0f} s")
            memory.vectors.embedder = make_embedder(embedder_name)
            app = FastAPI()
            app.include_router(create_router(MemoryApiDeps(db=db, vectors=memory.vectors)))
            port = free_port()
            server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            while not server.started:
                time.sleep(0.05)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                timed(http, "/sample/parents", {}, 5)  # warm up
                sample = timed(http, "/sample/parents", {"seed": "{i}"}, requests)
                ucb = timed(http, "/sample/parents", {"strategy": "ucb", "seed": "{i}"}, requests)
                search = []
                for i in range(requests):
                    search += timed(http, "/search/code", {"q": QUERIES[i % len(QUERIES)], "k": 10}, 1)
            server.should_exit = True
            thread.join()
        finally:
            mongo.stop()
    print(f"parent sampling, two-tier: {percentiles(sample)}")
    print(f"parent sampling, UCB:      {percentiles(ucb)}")
    print(f"similarity search (code):  {percentiles(search)}   ({embedder_name} query embedding included)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--embedder", choices=("minilm", "hashing"), default="minilm")
    parser.add_argument("--project-with", choices=("minilm", "hashing"), default=None,
                        help="embedder that fills the indexes (default: --embedder)")
    args = parser.parse_args()
    exit_on_sigterm()
    main(args.experiments, args.requests, args.embedder, args.project_with or args.embedder)
