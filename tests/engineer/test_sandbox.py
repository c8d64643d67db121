"""The sandbox contains the written-to-fail mixers: time, memory, network, filesystem, environment.

Each candidate runs through a tiny harness (import the file, build ``Mixer``, one forward) inside ``run_sandboxed``,
the way the engineer runs generated code.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared.mixer.sandbox import (
    GIB,
    Isolation,
    SandboxLimits,
    SandboxResult,
    classify,
    detect_isolation,
    run_python_sandboxed,
    run_sandboxed,
    sandbox_env,
)

BAD_MIXERS = Path(__file__).parent / "fixtures" / "bad_mixers"

# Imports the candidate, starts N stand-ins for data-loader workers (they must die with the group), runs a forward.
HARNESS = """
import importlib.util, json, subprocess, sys
candidate, kwargs, workers, token = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
for _ in range(workers):
    subprocess.Popen([sys.executable, "-c", "import time\\nwhile True: time.sleep(0.2)", "harness-worker", token])
import torch
spec = importlib.util.spec_from_file_location("candidate", candidate)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
torch.manual_seed(0)
mixer = module.Mixer(d_model=32, n_heads=4, **kwargs)
print("constructed", flush=True)
y = mixer(torch.randn(2, 16, 32))
assert y.shape == (2, 16, 32), y.shape
print("forward ok", flush=True)
"""

# A well-behaved causal mixer trained for a few steps: the limits must not get in the way of real work.
TRAIN_SCRIPT = """
import torch
from torch import nn

class Mixer(nn.Module):
    def __init__(self, d_model, n_heads, **kwargs):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)
    def forward(self, x):
        steps = torch.arange(1, x.shape[1] + 1, device=x.device).view(1, -1, 1)
        return torch.cumsum(self.proj(x), dim=1) / steps

torch.manual_seed(0)
model = nn.Sequential(nn.Embedding(512, 64), Mixer(64, 4), nn.Linear(64, 512))
opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
for step in range(5):
    tokens = torch.randint(0, 512, (8, 64))
    loss = nn.functional.cross_entropy(model(tokens)[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
    opt.zero_grad()
    loss.backward()
    opt.step()
torch.save(model.state_dict(), "checkpoint.pt")
print("trained", loss.item())
"""


@pytest.fixture(scope="module")
def isolation() -> Isolation:
    return detect_isolation()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path


def run_candidate(
    name: str, run_dir: Path, limits: SandboxLimits, kwargs: dict[str, object] | None = None, workers: int = 0
) -> SandboxResult:
    """Copy the candidate into its run dir (as the engineer does) and run the harness on it, sandboxed."""
    shutil.copy(BAD_MIXERS / name, run_dir / "candidate.py")
    (run_dir / "harness.py").write_text(HARNESS)
    args = ["candidate.py", json.dumps(kwargs or {}), str(workers), str(run_dir)]
    return run_python_sandboxed(run_dir / "harness.py", run_dir, limits, args)


def pids_with_marker(*markers: str) -> set[int]:
    """Host PIDs whose command line holds all markers (visible from outside any PID namespace)."""
    found: set[int] = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if all(marker.encode() in argv for marker in markers):
            found.add(int(cmdline.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_for(condition: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not condition():  # type: ignore[operator]
        time.sleep(0.05)


# --- the written-to-fail mixers -------------------------------------------------------------------------------------


def test_loops_forever_is_killed_with_its_whole_group(run_dir: Path) -> None:
    limits = SandboxLimits(wall_s=10, kill_grace_s=0.5)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(run_candidate, "loops_forever.py", run_dir, limits, None, 2)
        wait_for(lambda: len(pids_with_marker("harness-worker", str(run_dir))) == 2 or future.done(), 8)
        workers = pids_with_marker("harness-worker", str(run_dir))
        result = future.result(timeout=30)
    assert len(workers) == 2, f"the harness's worker processes never showed up: {result.stderr_tail}"
    assert "constructed" in result.stdout_tail and "forward ok" not in result.stdout_tail
    assert result.killed_reason == "timeout" and result.error_kind == "timeout"
    assert limits.wall_s <= result.wall_s < limits.wall_s + limits.kill_grace_s + 3
    assert result.cpu_s > 1.0, "CPU time of a killed child must still be measured"
    wait_for(lambda: not any(alive(pid) for pid in workers), 5)
    assert not [pid for pid in workers if alive(pid)], "grandchildren outlived the sandbox"


def test_unbounded_allocation_is_stopped_at_the_memory_limit(run_dir: Path) -> None:
    limits = SandboxLimits(wall_s=40, memory_bytes=1 * GIB)
    result = run_candidate("allocates_unbounded.py", run_dir, limits)
    assert result.killed_reason == "memory", result.stderr_tail
    assert result.error_kind == "memory"
    assert result.peak_rss_bytes is not None and result.peak_rss_bytes < 1.2 * GIB


def test_socket_attempt_finds_no_network(run_dir: Path, isolation: Isolation) -> None:
    if isolation == "none":
        pytest.skip("no network namespace on this machine: apt-get install bubblewrap")
    with socket.socket() as listener:  # reachable from any process on this host's loopback, not from the sandbox
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        result = run_candidate("opens_socket.py", run_dir, SandboxLimits(wall_s=40),
                               {"stats_host": "127.0.0.1", "stats_port": port})
        listener.settimeout(0.1)
        with pytest.raises(TimeoutError):
            listener.accept()
    assert result.network_isolated
    assert result.error_kind == "runtime"
    assert "ConnectionRefusedError" in result.stderr_tail or "unreachable" in result.stderr_tail, result.stderr_tail


@pytest.fixture
def outside_dir() -> Iterator[Path]:
    """A directory the test itself can write, outside the run dir and outside /tmp (which the sandbox replaces)."""
    base = "/var/tmp" if os.access("/var/tmp", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="asiarch-outside-", dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_write_outside_run_dir_fails_and_inside_succeeds(run_dir: Path, outside_dir: Path,
                                                          isolation: Isolation) -> None:
    if isolation != "bwrap":
        pytest.skip("no read-only filesystem view without bubblewrap: apt-get install bubblewrap")
    result = run_candidate("writes_outside_run_dir.py", run_dir, SandboxLimits(wall_s=40),
                           {"cache_dir": str(outside_dir / "cache")})
    assert result.filesystem_isolated and result.error_kind == "runtime"
    assert "Read-only file system" in result.stderr_tail, result.stderr_tail
    assert (run_dir / "scratch_stats.txt").read_text().strip(), "the write inside the run dir must succeed"
    assert not (outside_dir / "cache").exists()


# --- limits, environment, classification ----------------------------------------------------------------------------


def test_small_training_run_fits_the_default_limits(run_dir: Path) -> None:
    (run_dir / "train.py").write_text(TRAIN_SCRIPT)
    limits = SandboxLimits(wall_s=60, memory_bytes=2 * GIB)
    result = run_python_sandboxed(run_dir / "train.py", run_dir, limits)
    assert result.ok, result.stderr_tail
    assert (run_dir / "checkpoint.pt").stat().st_size > 0
    assert result.cpu_s > 0.5 and result.peak_rss_bytes is not None and result.peak_rss_bytes > 100 << 20


def test_secrets_stay_out_of_the_child(run_dir: Path, isolation: Isolation, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t-value-for-the-sandbox-test"
    for name in ("ASIARCH_MONGO_URI", "OPENAI_API_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "MY_SERVICE_TOKEN",
                 "TORCH_HUB_TOKEN", "DATABASE_URL"):
        monkeypatch.setenv(name, secret)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TORCH_SHOW_CPP_STACKTRACES", "1")
    # The child also looks for the value in every process environment it can read (its parents' included).
    probe = ("import glob, json, os, sys\n"
             "def readable(p):\n"
             "    try:\n        return open(p, 'rb').read()\n    except OSError:\n        return b''\n"
             "leaks = [p for p in glob.glob('/proc/[0-9]*/environ') if sys.argv[1].encode() in readable(p)]\n"
             "print(json.dumps({'env': dict(os.environ), 'leaks': leaks}))\n")
    result = run_sandboxed([sys.executable, "-c", probe, secret], run_dir, SandboxLimits(wall_s=20))
    assert result.ok, result.stderr_tail
    seen = json.loads(result.stdout_tail)
    assert secret not in json.dumps(seen["env"])
    assert seen["env"]["HOME"] == str(run_dir.resolve())
    assert seen["env"]["OMP_NUM_THREADS"] == "1" and seen["env"]["TORCH_SHOW_CPP_STACKTRACES"] == "1"
    if isolation == "bwrap":  # its own PID namespace and /proc: no other process's environment in view
        assert seen["leaks"] == []


def test_env_allowlist_and_deny_list() -> None:
    base = {"PATH": "/usr/bin", "LC_ALL": "C.UTF-8", "MKL_NUM_THREADS": "2", "GITHUB_TOKEN": "x", "SHELL": "/bin/sh",
            "CUDA_VISIBLE_DEVICES": "0", "ASIARCH_NATS_URL": "nats://x", "TORCH_API_KEY": "x", "MY_FLAG": "1"}
    env = sandbox_env(base, Path("/runs/1"), env_allow=["MY_*"], extra_env={"SEED": "3", "OPENAI_API_KEY": "k"})
    assert env["PATH"] == "/usr/bin" and env["LC_ALL"] == "C.UTF-8" and env["MKL_NUM_THREADS"] == "2"
    assert env["CUDA_VISIBLE_DEVICES"] == "0" and env["MY_FLAG"] == "1" and env["SEED"] == "3"
    assert env["HOME"] == "/runs/1"
    for dropped in ("GITHUB_TOKEN", "SHELL", "ASIARCH_NATS_URL", "TORCH_API_KEY", "OPENAI_API_KEY"):
        assert dropped not in env


def skip_unless_it_works_here(mode: str, isolation: Isolation) -> None:
    order = ["none", "unshare", "bwrap"]
    if order.index(mode) > order.index(isolation):
        pytest.skip(f"{mode} does not work on this machine (detected: {isolation})")


@pytest.mark.parametrize("mode", ["bwrap", "unshare", "none"])
def test_every_isolation_mode_kills_the_group_on_timeout(tmp_path: Path, isolation: Isolation, mode: str) -> None:
    skip_unless_it_works_here(mode, isolation)
    token = f"sleeper-{mode}-{os.getpid()}"
    script = f"exec -a {token} sleep 300 & exec -a {token} sleep 300 & wait"
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(run_sandboxed, ["bash", "-c", script], tmp_path / mode,
                             SandboxLimits(wall_s=1.5, kill_grace_s=0.2), isolation=mode)  # type: ignore[arg-type]
        wait_for(lambda: len(pids_with_marker(token)) == 2, 1.4)
        sleepers = pids_with_marker(token)
        result = future.result(timeout=20)
    assert len(sleepers) == 2 and result.killed_reason == "timeout"
    wait_for(lambda: not any(alive(pid) for pid in sleepers), 5)
    assert not [pid for pid in sleepers if alive(pid)]


# A parent that sandboxes a child which starts two more, then waits; the test kills the parent with SIGKILL.
PARENT = """
import sys
from pathlib import Path
from shared.mixer.sandbox import SandboxLimits, run_sandboxed
script = "exec -a {token} sleep 300 & exec -a {token} sleep 300 & wait"
run_sandboxed(["bash", "-c", script], Path(sys.argv[1]), SandboxLimits(wall_s=600), isolation=sys.argv[2])
"""


@pytest.mark.parametrize("mode", ["bwrap", "unshare", "none"])
def test_a_sandboxed_child_never_outlives_a_killed_parent(tmp_path: Path, isolation: Isolation, mode: str) -> None:
    skip_unless_it_works_here(mode, isolation)
    token = f"orphan-{mode}-{os.getpid()}"
    parent = subprocess.Popen([sys.executable, "-c", PARENT.replace("{token}", token), str(tmp_path / "run"), mode],
                              cwd=Path(__file__).parents[2])
    try:
        wait_for(lambda: len(pids_with_marker(token)) == 2, 20)
        sandboxed = pids_with_marker(token)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        wait_for(lambda: not any(alive(pid) for pid in sandboxed), 10)
        assert len(sandboxed) == 2 and not [pid for pid in sandboxed if alive(pid)]
    finally:
        for pid in pids_with_marker(token):
            os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()


def test_cpu_limit_is_classified_as_timeout(run_dir: Path) -> None:
    spin = "import time\nwhile True: pass"
    result = run_sandboxed([sys.executable, "-c", spin], run_dir, SandboxLimits(wall_s=20, cpu_s=1))
    assert result.killed_reason == "cpu" and result.error_kind == "timeout"
    assert 1 <= result.cpu_s < 5 and result.wall_s < 15


def test_classification_of_exit_states() -> None:
    limits = SandboxLimits(wall_s=10, cpu_s=5)
    assert classify(0, None, None, "", 1.0, limits) is None
    assert classify(1, None, None, "Traceback ...\nValueError: bad", 1.0, limits) is None
    assert classify(1, None, None, "RuntimeError: DefaultCPUAllocator: can't allocate memory", 1, limits) == "memory"
    assert classify(-9, signal.SIGKILL, None, "", 1.0, limits) == "memory"  # OOM killer
    assert classify(-9, signal.SIGKILL, None, "", 6.0, limits) == "cpu"  # RLIMIT_CPU hard limit
    assert classify(-15, signal.SIGTERM, "timeout", "", 1.0, limits) == "timeout"
    assert classify(-15, signal.SIGTERM, "stalled", "", 1.0, limits) == "stalled"
    assert classify(-11, signal.SIGSEGV, None, "Fatal Python error", 1.0, limits) == "signal"
