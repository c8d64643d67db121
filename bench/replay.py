"""Replay rate next to the raw JetStream read rate, measured in one run on the same stream.

    python bench/replay.py [--experiments 300] [--embedder hashing|minilm]

Prints events/s for: reading the stream (decode only), replaying the MongoDB projection, the first full projection
(store + FAISS, every text embedded) and a full replay (the embedding cache warm, as after `asiarch replay`), and
each one's ratio to the raw read. Asserts nothing: speed goals are read off, not tested.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.memory.handlers import Memory, apply_pairs
from services.memory.projection import Projector
from services.memory.vectors import CachingEmbedder, HashingEmbedder, MiniLMEmbedder, VectorStore
from shared import bus
from shared.embedded import exit_on_sigterm, free_port, start_mongo, start_nats
from shared.events import decode
from shared.store import mongo_client
from tests.memory.history import build_history


async def read_all(js) -> list:  # type: ignore[no-untyped-def]
    return [(m.seq, decode(m.data)) async for m in bus.read_stream(js)]


async def main(experiments: int, embedder_name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        nats = start_nats(Path(tmp) / "nats", free_port())
        mongo = start_mongo(Path(tmp) / "mongo", free_port())
        try:
            nc = await bus.connect(f"nats://127.0.0.1:{nats.port}", "bench")
            js = nc.jetstream()
            await bus.ensure_stream(js, duplicate_window_s=600)
            events = build_history(seed=1, experiments=experiments)
            for event in events:
                await bus.publish(js, event)
            started = time.perf_counter()
            pairs = await read_all(js)
            read_s = time.perf_counter() - started
            db = mongo_client(f"mongodb://127.0.0.1:{mongo.port}")["bench"]
            started = time.perf_counter()
            Projector(db).apply_all(pairs, batch=500, fresh=True)  # a new database, as after a drop
            store_s = time.perf_counter() - started
            inner = MiniLMEmbedder() if embedder_name == "minilm" else HashingEmbedder()
            inner.embed(["warm up"])
            embedder = CachingEmbedder(inner, Path(tmp) / "embeddings.npz")
            client = mongo_client(f"mongodb://127.0.0.1:{mongo.port}")
            full_s = []
            for name in ("cold", "warm"):  # the first pass fills the embedding cache, as the live projection does
                memory = Memory(Projector(client[f"bench_{name}"]), VectorStore(embedder, Path(tmp) / name))
                started = time.perf_counter()
                apply_pairs(memory, pairs, fresh=True)
                full_s.append(time.perf_counter() - started)
            await nc.close()
        finally:
            mongo.stop()
            nats.stop()
    n = len(pairs)
    print(f"events: {n}")
    print(f"raw JetStream read + decode: {n / read_s:10,.0f} events/s")
    print(f"replay, store projection:    {n / store_s:10,.0f} events/s   ratio {read_s / store_s:.3f}")
    cold, warm = full_s
    print(f"first projection, store + {embedder_name}:  {n / cold:10,.0f} events/s   ratio {read_s / cold:.3f}")
    print(f"replay, store + {embedder_name} (cached):  {n / warm:10,.0f} events/s   ratio {read_s / warm:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=300)
    parser.add_argument("--embedder", choices=("hashing", "minilm"), default="minilm")
    args = parser.parse_args()
    exit_on_sigterm()
    asyncio.run(main(args.experiments, args.embedder))
