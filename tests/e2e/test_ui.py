"""The web UI in a real browser: headless Chromium (Debian's, driven by its chromium-driver) against the memory
service as a process, over a short scripted history on a real NATS and store.

A screenshot of every page is kept under ``$ASIARCH_TEST_ARTIFACTS`` (default ``test-artifacts/`` at the repo
root), so a failure can be looked at.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from shared.embedded import free_port, start_mongo, start_nats
from shared.events import CampaignStopped, CurvePoint, Event
from tests.e2e.test_memory_service import MemoryProcess, publish
from tests.memory.history import STARTER_EVENTS, baseline_events, build_history

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (make system-deps installs them)")
ARTIFACTS = Path(os.environ.get("ASIARCH_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


def with_curves(events: list[Event]) -> list[Event]:
    """The scripted baselines with a loss curve each, as `asiarch baselines` publishes them."""
    out: list[Event] = []
    for event in events:
        final = getattr(event, "val_loss", 4.0)
        curve = tuple(CurvePoint(step=s, tokens=s * 2048, loss=final + 3.0 / (1 + s / 8)) for s in range(0, 101, 10))
        out.append(msgspec.structs.replace(event, curve=curve))  # type: ignore[type-var]
    return out


HISTORY: list[Event] = [*with_curves(baseline_events()),
                        *with_curves(baseline_events(mixer="linear_attention", losses=(4.21, 4.26), reference=False)),
                        *build_history(seed=5, experiments=8)]


class Stack:
    def __init__(self, root: Path) -> None:
        self.nats = start_nats(root / "nats", free_port())
        self.mongo = start_mongo(root / "mongo", free_port())
        self.memory = MemoryProcess(f"nats://127.0.0.1:{self.nats.port}", f"mongodb://127.0.0.1:{self.mongo.port}",
                                    root)
        self.memory.env.pop("ASIARCH_HTTP_HOST", None)  # the default bind address is what is under test

    @property
    def ui(self) -> str:
        return f"http://127.0.0.1:{self.memory.port}/ui"

    def stop(self) -> None:
        self.memory.stop()
        self.mongo.stop()
        self.nats.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("ui"))
    try:
        running.memory.start()
        asyncio.run(publish(running.memory.env["ASIARCH_NATS_URL"], HISTORY))
        running.memory.wait_until(lambda: running.memory.seq() >= STARTER_EVENTS + len(HISTORY), "caught up")
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def shoot(driver: object, name: str) -> None:
    """The whole page, not just the window: the window is stretched to the page's height first."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")  # type: ignore[attr-defined]
    driver.set_window_size(1400, min(max(int(height) + 120, 1000), 12000))  # type: ignore[attr-defined]
    driver.save_screenshot(str(ARTIFACTS / f"ui-{name}.png"))  # type: ignore[attr-defined]


def api(stack: Stack, path: str, **params: object) -> dict[str, object]:
    response = httpx.get(f"http://127.0.0.1:{stack.memory.port}{path}", params=params, timeout=30)
    response.raise_for_status()
    return response.json()


def test_the_leaderboard_lists_every_experiment_best_first(stack: Stack, browser: object) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{stack.ui}/")  # type: ignore[attr-defined]
    shoot(browser, "leaderboard")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.board tbody tr[data-id]")  # type: ignore[attr-defined]
    listed = api(stack, "/experiments", limit=200)
    assert {row.get_attribute("data-id") for row in rows} == {item["id"] for item in listed["items"]}
    ranked = api(stack, "/experiments", sort="fitness", limit=200)["items"]
    best = max((item for item in ranked if item["fitness"] is not None), key=lambda item: item["fitness"])
    assert rows[0].get_attribute("data-id") == best["id"]
    assert "yield" in browser.find_element(By.ID, "spend").text  # type: ignore[attr-defined]


def trained_child(stack: Stack) -> tuple[dict[str, object], dict[str, object]]:
    """A trained experiment whose first parent is a trained experiment, with that parent."""
    for item in api(stack, "/experiments", status="trained", limit=200)["items"]:
        parents = item["parent_ids"]
        if parents and not str(parents[0]).startswith("baseline:"):
            parent = api(stack, f"/experiments/{parents[0]}")["experiment"]
            if parent["status"] == "trained":
                return item, parent
    raise AssertionError("the scripted history has no trained child of a trained parent")


def test_an_experiment_page_shows_its_diff_and_its_curve_beside_its_parents(stack: Stack, browser: object) -> None:
    from selenium.webdriver.common.by import By

    child, parent = trained_child(stack)
    browser.get(f"{stack.ui}/experiments/{child['id']}")  # type: ignore[attr-defined]
    shoot(browser, "experiment")
    find = browser.find_element  # type: ignore[attr-defined]
    assert child["name"] in find(By.TAG_NAME, "h1").text
    changed = [line.text for line in find(By.ID, "diff").find_elements(By.CSS_SELECTOR, "pre.diff span.add")]
    assert changed, "the diff against the parent shows no added line"
    curves = {c.get_attribute("data-name") for c in find(By.ID, "curve").find_elements(By.CSS_SELECTOR,
                                                                                        "polyline.curve")}
    assert {child["name"], f"parent: {parent['name']}", "baseline: deltanet", "baseline: linear_attention"} <= curves
    link = find(By.ID, "parents").find_element(By.TAG_NAME, "a")
    assert link.get_attribute("href").endswith(f"/ui/experiments/{parent['id']}")
    assert find(By.ID, "attempts").find_elements(By.CSS_SELECTOR, ".attempt")


def test_a_failed_and_patched_attempt_shows_its_error_and_the_patch(stack: Stack, browser: object) -> None:
    from selenium.webdriver.common.by import By

    patched = api(stack, "/failures/search", q="error", k=50, only_fixed=True)["hits"]
    assert patched, "the scripted history has no patched failure"
    hit = patched[0]
    browser.get(f"{stack.ui}/experiments/{hit['experiment_id']}")  # type: ignore[attr-defined]
    shoot(browser, "attempts")
    attempt = browser.find_element(By.CSS_SELECTOR, f".attempt[data-attempt='{hit['attempt']}']")  # type: ignore[attr-defined]
    assert hit["error_kind"] in attempt.text and "the debugger's patch" in attempt.text
    assert attempt.find_elements(By.CSS_SELECTOR, "pre.diff span")


def test_the_tree_links_each_parent_to_its_children(stack: Stack, browser: object) -> None:
    from selenium.webdriver.common.by import By

    child, parent = trained_child(stack)
    browser.get(f"{stack.ui}/tree")  # type: ignore[attr-defined]
    shoot(browser, "tree")
    under = browser.find_element(By.CSS_SELECTOR, f"li[data-id='{parent['id']}'] > ul")  # type: ignore[attr-defined]
    link = under.find_element(By.CSS_SELECTOR, f"li[data-id='{child['id']}'] > a")
    roots = browser.find_elements(By.CSS_SELECTOR, "ul.tree > li")  # type: ignore[attr-defined]
    assert roots and all(r.get_attribute("data-id") for r in roots)
    link.click()
    assert browser.current_url.endswith(f"/ui/experiments/{child['id']}")  # type: ignore[attr-defined]


def test_the_live_feed_shows_a_new_event_without_a_reload(stack: Stack, browser: object) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{stack.ui}/events")  # type: ignore[attr-defined]
    before = len(browser.find_elements(By.CSS_SELECTOR, "#feed tbody tr"))  # type: ignore[attr-defined]
    assert before > 0
    # The scripted campaign is over already: memory keeps its first stop, so this changes no page but the feed.
    probe = CampaignStopped(event_id="ui-test-feed", occurred_at=HISTORY[-1].occurred_at, producer="test",
                            campaign_id=HISTORY[-1].campaign_id, reason="the feed's probe")
    asyncio.run(publish(stack.memory.env["ASIARCH_NATS_URL"], [probe]))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        newest = browser.find_element(By.CSS_SELECTOR, "#feed tbody tr:first-child")  # type: ignore[attr-defined]
        if "the feed's probe" in newest.text:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the new event did not appear on the feed")
    shoot(browser, "events")


def listening_address(port: int) -> str:
    """The IPv4 address a socket listening on ``port`` is bound to, from /proc/net/tcp."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            return ".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0))
    raise AssertionError(f"nothing listens on port {port}")


def outside_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback."""
    if shutil.which("ip") is None:
        return []
    shown = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=False).stdout
    found = [line.split()[3].split("/")[0] for line in shown.splitlines() if len(line.split()) > 3]
    return [address for address in found if not address.startswith("127.")]


def answers(address: str, port: int) -> bool:
    try:
        return httpx.get(f"http://{address}:{port}/ui/", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_ui_answers_only_on_loopback_by_default(stack: Stack) -> None:
    port = stack.memory.port
    assert "ASIARCH_HTTP_HOST" not in stack.memory.env
    assert listening_address(port) == "127.0.0.1"
    assert answers("127.0.0.1", port)
    for address in outside_addresses():
        assert not answers(address, port), f"the UI answers on {address}"
