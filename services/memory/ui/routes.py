"""The web UI's routes under ``/ui/``: server-rendered pages over the projection, a live event feed, static files.

Handlers that read the store are plain ``def`` (FastAPI runs them in its thread pool, like the query API); the
feed reads the stream and is ``async``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from pymongo.database import Database

from services.memory.ui import views
from services.memory.ui.charts import loss_chart
from shared.event_text import EventLine
from shared.mixer.baselines import baseline_of_ref
from shared.settings import UI_PREFIX

HERE = Path(__file__).resolve().parent
PREFIX = UI_PREFIX
BOARD_ROWS = 200
FEED_EVENTS = 100
# The newest events the feed reads: (after this stream sequence, at most this many) -> lines, oldest first.
STATIC_FILES = frozenset(p.name for p in (HERE / "static").iterdir() if p.is_file())
RecentEvents = Callable[[int, int], Awaitable[list[EventLine]]]


def number(value: Any, digits: int = 3) -> str:
    """A number for a table: floats to ``digits`` places, ints with separators, anything missing as a dash."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if math.isfinite(value) else "–"
    return f"{value:,}"


def when(value: Any) -> str:
    if not isinstance(value, dt.datetime):
        return "–"
    return value.strftime("%Y-%m-%d %H:%M:%S")


def templates() -> Jinja2Templates:
    found = Jinja2Templates(directory=HERE / "templates")
    found.env.filters["number"] = number
    found.env.filters["when"] = when
    found.env.globals["prefix"] = PREFIX
    found.env.globals["baseline_of_ref"] = baseline_of_ref
    return found


def create_ui_router(db: Database, recent_events: RecentEvents) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["ui"], include_in_schema=False)
    pages = templates()

    @router.get("", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/")

    @router.get("/", response_class=HTMLResponse)
    def board(request: Request, campaign: str | None = Query(None, min_length=1)) -> HTMLResponse:
        found = views.leaderboard(db, campaign, BOARD_ROWS)
        return pages.TemplateResponse(request, "leaderboard.html", {"board": found, "page": "board"})

    @router.get("/experiments/{experiment_id}", response_class=HTMLResponse)
    def experiment(request: Request, experiment_id: str = PathParam(min_length=1, max_length=200)) -> HTMLResponse:
        found = views.experiment(db, experiment_id)
        if found is None:
            raise HTTPException(404, f"no experiment {experiment_id!r}")
        chart = loss_chart(found.curves)
        return pages.TemplateResponse(request, "experiment.html", {"view": found, "chart": chart, "page": "board"})

    @router.get("/tree", response_class=HTMLResponse)
    def tree(request: Request, campaign: str | None = Query(None, min_length=1)) -> HTMLResponse:
        roots = views.lineage_tree(db, campaign)
        return pages.TemplateResponse(request, "tree.html", {"roots": roots, "campaign": campaign, "page": "tree"})

    @router.get("/events", response_class=HTMLResponse)
    async def feed(request: Request) -> HTMLResponse:
        lines = await recent_events(0, FEED_EVENTS)
        return pages.TemplateResponse(request, "events.html", {"lines": lines, "page": "events"})

    @router.get("/events.json")
    async def feed_since(after: int = Query(0, ge=0), limit: int = Query(FEED_EVENTS, ge=1, le=1000)
                         ) -> list[dict[str, Any]]:
        return [{"seq": line.seq, "at": when(line.occurred_at), "name": line.name, "campaign_id": line.campaign_id,
                 "experiment_id": line.experiment_id, "text": line.text} for line in await recent_events(after, limit)]

    @router.get("/static/{name}")
    def static(name: str) -> FileResponse:
        if name not in STATIC_FILES:  # only the files shipped beside this module
            raise HTTPException(404, f"no file {name!r}")
        return FileResponse(HERE / "static" / name, headers={"Cache-Control": "max-age=300"})

    return router
