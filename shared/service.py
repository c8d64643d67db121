"""The run loop every service shares: settings → bootstrap → run, with health, metrics and graceful shutdown.

A service module provides a ``ServiceSpec``: its name, a ``bootstrap`` that wires its dependencies and returns its
handlers (one per subject), and optionally extra HTTP routes. ``run_service`` does the rest: connects to NATS and the
store, ensures the stream, serves ``/healthz`` and ``/metrics``, consumes until SIGTERM/SIGINT, then drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pymongo import MongoClient
from pymongo.database import Database

from shared import bus, metrics
from shared.events import Event
from shared.settings import ServiceSettings
from shared.store import MongoLedger, mongo_client, ping

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What bootstrap gets to wire a service: live connections and its settings."""

    settings: ServiceSettings
    nc: NatsClient
    js: JetStreamContext
    mongo: MongoClient
    db: Database
    stop: asyncio.Event
    # Things a bootstrap wants closed on shutdown (files, thread pools), closed in reverse order.
    exit_stack: AsyncExitStack


@dataclass
class Wiring:
    handlers: Mapping[type[Event], bus.Handler]
    router: APIRouter | None = None
    # Background work beside the consumer (e.g. the researcher's proposal loop); cancelled on shutdown.
    tasks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Why the service cannot take work now (None: it can); checked before each fetch and shown by /healthz.
    ready: Callable[[], Awaitable[str | None]] | None = None


@dataclass
class ServiceSpec:
    name: str
    settings_type: type[ServiceSettings]
    bootstrap: Callable[[Runtime], Awaitable[Wiring]]


def configure_logging(service: str) -> None:
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s",
    )


def main(spec: ServiceSpec) -> None:
    """Entry point of ``python -m services.<name>``."""
    configure_logging(spec.name)
    settings = spec.settings_type(service_name=spec.name)
    asyncio.run(run_service(spec, settings))


async def run_service(spec: ServiceSpec, settings: ServiceSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        runtime = await connect_runtime(settings, stop, stack)
        wiring = await spec.bootstrap(runtime)
        consumer = bus.Consumer(
            js=runtime.js, service=spec.name, handlers=wiring.handlers,
            ledger=MongoLedger(runtime.db, spec.name), policy=policy_from(settings), ready=wiring.ready,
        )
        app = build_http_app(spec.name, runtime, wiring.router, consumer)
        server = await start_http(app, settings, stack)
        tasks = [asyncio.create_task(consumer.run(stop), name="consumer")]
        tasks += [asyncio.create_task(work(), name="background") for work in wiring.tasks]
        tasks.append(asyncio.create_task(report_lag(runtime.js, spec.name, stop), name="lag"))
        metrics.SERVICE_READY.labels(spec.name).set(1)
        log.info("%s ready: consuming %s, http on %s:%d", spec.name, consumer.subjects, settings.http_host,
                 server.config.port)
        await wait_until_stopped(stop, tasks)
        metrics.SERVICE_READY.labels(spec.name).set(0)
    log.info("%s stopped", spec.name)


async def connect_runtime(settings: ServiceSettings, stop: asyncio.Event, stack: AsyncExitStack) -> Runtime:
    nc = await bus.connect(settings.nats_url, settings.service_name, keep_trying=True)
    stack.push_async_callback(nc.drain)
    js = nc.jetstream()
    await bus.ensure_stream(js, settings.duplicate_window_s)
    mongo = mongo_client(settings.mongo_uri)
    stack.callback(mongo.close)
    if not await asyncio.to_thread(ping, mongo):
        raise ConnectionError(f"the store at {settings.mongo_uri} does not answer")
    return Runtime(settings, nc, js, mongo, mongo[settings.mongo_db], stop, stack)


def policy_from(settings: ServiceSettings) -> bus.ConsumerPolicy:
    return bus.ConsumerPolicy(
        max_deliver=settings.max_deliver, ack_wait_s=settings.ack_wait_s,
        retry_backoff_s=settings.retry_backoff_s, batch=settings.concurrency, max_ack_pending=settings.max_ack_pending,
    )


async def wait_until_stopped(stop: asyncio.Event, tasks: list[asyncio.Task[Any]]) -> None:
    """Run until a signal, or until a task dies (then re-raise so the supervisor restarts us)."""
    stopper = asyncio.create_task(stop.wait())
    _done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    # The consumer finishes the message in hand and returns; background tasks are cancelled.
    for task in tasks:
        if task.get_name() != "consumer":
            task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    stopper.cancel()
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, asyncio.CancelledError):
            raise result


async def report_lag(js: JetStreamContext, service: str, stop: asyncio.Event, every_s: float = 5.0) -> None:
    while not stop.is_set():
        pending, ack_pending = await bus.consumer_lag(js, service)
        metrics.CONSUMER_PENDING.labels(service).set(pending)
        metrics.CONSUMER_ACK_PENDING.labels(service).set(ack_pending)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


# --- HTTP: health and metrics ---------------------------------------------------------------------------------------


def build_http_app(service: str, runtime: Runtime, router: APIRouter | None,
                   consumer: bus.Consumer | None = None) -> FastAPI:
    app = FastAPI(title=f"asiarch {service}", version="1")

    @app.get("/healthz", summary="Up when NATS and the store answer; says what work waits for, if any")
    async def healthz() -> JSONResponse:
        nats_ok = runtime.nc.is_connected
        store_ok = await asyncio.to_thread(ping, runtime.mongo)
        ok = nats_ok and store_ok
        body: dict[str, object] = {"service": service, "status": "ok" if ok else "degraded", "nats": nats_ok,
                                   "store": store_ok}
        # Alive but waiting (no prepared corpus, say) is not a crash to restart for: still 200, with the fix named.
        waiting = consumer.waiting_for if consumer is not None else None
        if waiting:
            body |= {"status": "waiting", "waiting_for": waiting}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    if router is not None:
        app.include_router(router)
    return app


class _ServerWithoutSignals(uvicorn.Server):
    """uvicorn would take over SIGTERM/SIGINT; the service's own handlers already stop everything in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def start_http(app: FastAPI, settings: ServiceSettings, stack: AsyncExitStack) -> uvicorn.Server:
    config = uvicorn.Config(
        app, host=settings.http_host, port=settings.resolved_http_port(), log_level="warning", lifespan="off",
    )
    server = _ServerWithoutSignals(config)
    task = asyncio.create_task(server.serve(), name="http")

    async def shutdown() -> None:
        server.should_exit = True
        await task

    stack.push_async_callback(shutdown)
    while not server.started:
        if task.done():
            task.result()  # raises the bind error
            raise OSError(f"http server on port {config.port} exited at start")
        await asyncio.sleep(0.02)
    return server
