"""``asiarch replay`` and ``asiarch cognition add``: requests to the memory service, the projections' one writer."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from shared.cli.stack import Endpoints
from shared.errors import AsiarchError


class MemoryRequestError(AsiarchError):
    code = "memory_request"


def memory_client(stack: Endpoints, timeout_s: float = 30.0) -> httpx.Client:
    return httpx.Client(base_url=stack.memory_url, timeout=timeout_s)


def checked(response: httpx.Response) -> dict[str, Any]:
    """The JSON body, or a clear error with the service's own explanation."""
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise MemoryRequestError(f"memory refused ({response.status_code}): {detail}")
    return response.json()


def replay(stack: Endpoints, until: int | None, into: str | None, console: Console) -> dict[str, Any]:
    with memory_client(stack) as http:
        job = checked(http.post("/admin/replay", json={"until_seq": until, "into": into}))
        columns = (TextColumn(f"replaying into {job['target']}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("replay", total=None)
            while job["state"] == "running":
                time.sleep(0.5)
                job = checked(http.get("/admin/replay"))
                bar.update(task, completed=job["done"], total=job["total"] or None)
    if job["state"] != "finished":
        raise MemoryRequestError(f"the replay failed: {job['error']}")
    console.print(f"replayed {job['total']} events into {job['target']}")
    return job


def add_cognition(stack: Endpoints, path: Path) -> dict[str, Any]:
    with memory_client(stack, timeout_s=600) as http:
        return checked(http.post("/admin/cognition", json={"path": str(path)}))


def profile_baselines(stack: Endpoints, profile: str) -> dict[str, Any]:
    """What memory holds on the profile's baselines: the fitness reference, each mixer, the noise floor, the
    best baseline and the benchmark tasks that carry signal."""
    with memory_client(stack, timeout_s=10) as http:
        try:
            return checked(http.get(f"/baselines/{profile}"))
        except httpx.HTTPError as exc:
            raise MemoryRequestError(f"memory at {stack.memory_url} does not answer: start the stack "
                                     f"(`asiarch up`) ({exc})") from exc


def reference_baseline(stack: Endpoints, profile: str) -> dict[str, Any] | None:
    """The profile's fitness reference as memory holds it, or None until it has the seeds fitness needs."""
    body = profile_baselines(stack, profile)
    return body["reference"] if body["fitness_ready"] else None
