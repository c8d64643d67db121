"""Run untrusted (LLM-written) code in a child process, never in the service process (docs/architecture.md §6).

The child gets:

* its own session and process group, killed whole on the wall-time limit or when its heartbeat falls silent for
  longer than the stall limit (SIGTERM, then SIGKILL after a grace), and never outliving the process that started
  it: with bubblewrap or ``unshare`` a parent-death signal ends the child's own PID namespace, so nothing it started
  survives; without either, ``shared.mixer.guard`` sits in front and kills the whole group when it is orphaned;
* rlimits: memory (``RLIMIT_DATA`` by default: it counts private writable mappings — what allocations are — while
  ``RLIMIT_AS`` would also count the address space CUDA/torch *reserve* and break them), CPU seconds, open files,
  file size, no core dumps;
* no network and a read-only view of everything except its run directory, through bubblewrap when it works here,
  else only a network namespace (``unshare -rn``), else nothing (logged loudly and flagged in the result);
* an environment reduced to an allowlist (no tokens, keys, URIs of our own stack), with ``HOME`` = the run directory.

``run_sandboxed`` returns a ``SandboxResult`` whose ``error_kind`` maps onto the engineer's error kinds
(``timeout`` / ``memory`` / ``runtime``).
"""

from __future__ import annotations

import contextlib
import ctypes
import fnmatch
import functools
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shared.errors import NotReady
from shared.mixer.heartbeat import silent_for

log = logging.getLogger(__name__)

Isolation = Literal["bwrap", "unshare", "none"]
KilledReason = Literal["timeout", "stalled", "cpu", "memory", "file_size", "signal"]
_Stop = Literal["timeout", "stalled"]  # why we stopped a child ourselves
ErrorKind = Literal["timeout", "memory", "runtime"]

GIB = 1 << 30
PROJECT_ROOT = Path(__file__).resolve().parents[2]
GUARD = Path(__file__).resolve().parent / "guard.py"

# Passed through from the parent's environment when present (exact names, then glob patterns).
ENV_ALLOW_NAMES: frozenset[str] = frozenset({
    "PATH", "LANG", "LANGUAGE", "TZ", "TERM", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE", "PYTHONFAULTHANDLER", "PYTHONWARNINGS", "CUBLAS_WORKSPACE_CONFIG",
    "NVIDIA_VISIBLE_DEVICES", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM",
})
ENV_ALLOW_PATTERNS: tuple[str, ...] = (
    "LC_*", "OMP_*", "MKL_*", "OPENBLAS_*", "KMP_*", "TORCH_*", "TORCHINDUCTOR_*", "PYTORCH_*", "CUDA_*",
)
# Dropped even when allowed above or asked for by the caller: names that look like credentials or our own stack.
ENV_DENY_PATTERNS: tuple[str, ...] = (
    "*TOKEN*", "*KEY*", "*SECRET*", "*PASSWORD*", "*PASSWD*", "*CREDENTIAL*", "*AUTH*", "*COOKIE*", "*_URI",
    "*_URL", "AWS_*", "ASIARCH_*", "GOOGLE_*", "AZURE_*", "OPENAI_*", "ANTHROPIC_*", "HF_TOKEN*", "GITHUB_*",
    "SSH_*", "GPG_*", "DOCKER_*",
)
# Masked with an empty tmpfs under bubblewrap: secrets on disk, and /run, whose Unix sockets (docker, dbus, …)
# a read-only bind would still let the child connect to (a network namespace does not cover path sockets).
DEFAULT_HIDDEN_PATHS: tuple[str, ...] = ("/run", "/etc/asiarch", "/var/backups/asiarch")

# Text in the child's stderr that says an allocation was refused (torch, CUDA, Python, C++).
MEMORY_MARKERS: tuple[str, ...] = (
    "MemoryError", "can't allocate memory", "Cannot allocate memory", "std::bad_alloc", "out of memory",
    "OutOfMemoryError",
)


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandboxed run. ``None`` means no limit of that kind."""

    wall_s: float = 3600.0
    # With a heartbeat file: stop the child when it has not beaten for this long (None: no stall limit).
    stall_s: float | None = None
    # CPU seconds per process (RLIMIT_CPU); None: wall_s × the machine's cores, so it only stops a runaway.
    cpu_s: float | None = None
    memory_bytes: int | None = 16 * GIB
    memory_rlimit: Literal["data", "as"] = "data"
    open_files: int = 1024
    file_bytes: int | None = 16 * GIB
    # Between SIGTERM and SIGKILL on timeout. (Under bwrap the child is PID 1 of its namespace and ignores
    # SIGTERM unless it handles it; its own children still get the chance to end.)
    kill_grace_s: float = 1.0
    tail_bytes: int = 16_000

    def effective_cpu_s(self) -> int:
        cpu = self.cpu_s if self.cpu_s is not None else self.wall_s * (os.cpu_count() or 1)
        return max(1, int(cpu + 0.999))


@dataclass(frozen=True)
class SandboxResult:
    """What happened to one sandboxed child."""

    returncode: int
    stdout_tail: str
    stderr_tail: str
    wall_s: float
    cpu_s: float
    peak_rss_bytes: int | None
    # Why it stopped abnormally: we killed it on time ("timeout") or on a silent heartbeat ("stalled"), RLIMIT_CPU
    # ("cpu"), an allocation was refused or the kernel OOM-killed it ("memory"), RLIMIT_FSIZE ("file_size"),
    # another signal ("signal"); None otherwise.
    killed_reason: KilledReason | None
    signal: int | None
    isolation: Isolation
    network_isolated: bool
    filesystem_isolated: bool
    stdout_path: Path
    stderr_path: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.killed_reason is None

    @property
    def error_kind(self) -> ErrorKind | None:
        """The engineer's error kind for this outcome; None when the child succeeded."""
        if self.ok:
            return None
        if self.killed_reason in ("timeout", "stalled", "cpu"):
            return "timeout"
        if self.killed_reason == "memory":
            return "memory"
        return "runtime"


@dataclass(frozen=True)
class _Exit:
    cpu_s: float
    peak_rss_bytes: int
    stopped: _Stop | None  # why we killed it, if we did
    wall_s: float


# --- isolation --------------------------------------------------------------------------------------------------------


def _gpu_device_nodes() -> list[str]:
    """Device nodes CUDA needs; ``--dev /dev`` would otherwise hide them."""
    dev = Path("/dev")
    nodes = sorted(str(p) for p in dev.glob("nvidia*"))
    if (dev / "dri").exists():
        nodes.append("/dev/dri")
    return nodes


def bwrap_prefix(run_dir: Path, hidden_paths: Iterable[str] = DEFAULT_HIDDEN_PATHS,
                 read_only: Iterable[Path] = ()) -> list[str]:
    """The bubblewrap command line in front of the child's argv.

    Order matters: tmpfs masks first, then the run directory's bind, so a run dir under /tmp stays visible.
    ``--as-pid-1`` makes the child bwrap's own waited-for child, so its CPU time and peak RSS reach our ``wait4``
    (bwrap's default reaper exits without being waited for, and the usage is lost). When the child exits, the
    kernel kills everything else in its PID namespace, even processes that left our process group with setsid.
    """
    args = ["bwrap", "--unshare-net", "--unshare-pid", "--as-pid-1", "--unshare-ipc", "--unshare-uts",
            "--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for node in _gpu_device_nodes():
        args += ["--dev-bind", node, node]
    masked = ["/tmp", *(p for p in hidden_paths if Path(p).is_dir() and not run_dir.is_relative_to(p))]
    for path in masked:
        args += ["--tmpfs", path]
    # The interpreter, the project and the caller's read-only inputs (the token data) must stay visible even when
    # they live under a masked path (a CI checkout in /tmp, say).
    keep_visible = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), PROJECT_ROOT}
    keep_visible |= {Path(p).resolve() for p in read_only}
    for keep in sorted(keep_visible):
        if any(keep.is_relative_to(path) for path in masked):
            args += ["--ro-bind", str(keep), str(keep)]
    args += ["--bind", str(run_dir), str(run_dir), "--chdir", str(run_dir), "--"]
    return args


def unshare_prefix() -> list[str]:
    # --pid --fork --kill-child: the child is PID 1 of its own namespace, killed when unshare dies (and unshare dies
    # with our process, by the parent-death signal), which takes everything else in the namespace with it.
    return ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--"]


def _probe(argv: list[str]) -> bool:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.info("sandbox probe %s failed: %s", argv[0], exc)
        return False
    if done.returncode != 0:
        log.info("sandbox probe %s exited %s: %s", argv[0], done.returncode, done.stderr[-300:])
    return done.returncode == 0


@functools.lru_cache(maxsize=1)
def detect_isolation() -> Isolation:
    """The strongest isolation that actually works on this machine, probed once per process."""
    true_bin = shutil.which("true") or "/bin/true"
    if shutil.which("bwrap"):
        with tempfile.TemporaryDirectory(prefix="asiarch-probe-") as probe_dir:
            if _probe([*bwrap_prefix(Path(probe_dir).resolve()), true_bin]):
                return "bwrap"
    if shutil.which("unshare") and _probe([*unshare_prefix(), true_bin]):
        log.warning("bubblewrap is missing or does not work here: sandboxed code gets no network but sees and can "
                    "write the whole filesystem (apt-get install bubblewrap)")
        return "unshare"
    log.error("NO SANDBOX ISOLATION: neither bubblewrap nor `unshare -rn` works here; untrusted code runs with "
              "network and filesystem access, limited only by rlimits and its process group")
    return "none"


class SandboxUnavailable(NotReady):
    """Neither bubblewrap nor ``unshare`` works here, and running LLM-written code without isolation was not
    allowed: the work waits until an operator installs one (or opts in)."""

    code = "no_isolation"


NO_ISOLATION = ("no sandbox isolation works on this machine (neither bubblewrap nor `unshare -rn`), so LLM-written "
                "code would run with network and filesystem access: install bubblewrap (apt-get install bubblewrap), "
                "or allow running without isolation with ASIARCH_ALLOW_UNISOLATED=1")


def unisolated_allowed() -> bool:
    """The operator's explicit opt-in to run untrusted code with rlimits and a process group only."""
    return os.environ.get("ASIARCH_ALLOW_UNISOLATED", "").lower() in ("1", "true", "yes")


def describe_isolation(mode: Isolation) -> str:
    """What the sandbox in force keeps from untrusted code, in a line for `asiarch status`."""
    if mode == "bwrap":
        return "bubblewrap: no network, a read-only filesystem but for the run folder, own PID namespace"
    if mode == "unshare":
        return "unshare: no network, own PID namespace, but the filesystem is visible and writable"
    allowed = "allowed by ASIARCH_ALLOW_UNISOLATED" if unisolated_allowed() else "refused: runs wait"
    return f"none: network and filesystem open to untrusted code ({allowed})"


# --- environment ------------------------------------------------------------------------------------------------------


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def sandbox_env(
    base: Mapping[str, str],
    run_dir: Path,
    env_allow: Iterable[str] = (),
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The child's environment: the allowlisted part of ``base`` (deny patterns win), then our own settings.

    ``env_allow`` adds names or glob patterns to the allowlist; ``extra_env`` values are set as given (the caller
    owns them), except names on the deny list.
    """
    allow = (*ENV_ALLOW_PATTERNS, *env_allow)
    env = {k: v for k, v in base.items() if (k in ENV_ALLOW_NAMES or _matches(k, allow))}
    env.update(extra_env or {})
    env = {k: v for k, v in env.items() if not _matches(k.upper(), ENV_DENY_PATTERNS)}
    env.setdefault("PATH", os.defpath)
    env.setdefault("LANG", "C.UTF-8")
    env.update({"HOME": str(run_dir), "XDG_CACHE_HOME": str(run_dir / ".cache"), "PYTHONNOUSERSITE": "1"})
    return env


# --- limits and waiting -----------------------------------------------------------------------------------------------


def _capped(value: int, limit_kind: int) -> tuple[int, int]:
    """(soft, hard) = value, but never above the hard limit we already have (raising it needs privileges)."""
    _, hard = resource.getrlimit(limit_kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    return value, value


def _rlimit_setter(limits: SandboxLimits, die_with_parent: bool = True) -> Callable[[], None]:
    """A preexec_fn: runs in the forked child before exec, so it only calls setrlimit (async-signal-safe enough)."""
    settings: list[tuple[int, tuple[int, int]]] = [(resource.RLIMIT_CORE, (0, 0))]
    settings.append((resource.RLIMIT_NOFILE, _capped(limits.open_files, resource.RLIMIT_NOFILE)))
    cpu = limits.effective_cpu_s()
    # The soft limit sends SIGXCPU; the hard one, a second later, SIGKILL. Under bwrap the child is PID 1 of its
    # namespace, which ignores SIGXCPU, so there the hard limit is what stops it (classified "cpu" by its CPU time).
    settings.append((resource.RLIMIT_CPU, (cpu, cpu + 1)))
    if limits.memory_bytes is not None:
        kind = resource.RLIMIT_DATA if limits.memory_rlimit == "data" else resource.RLIMIT_AS
        settings.append((kind, _capped(limits.memory_bytes, kind)))
    if limits.file_bytes is not None:
        settings.append((resource.RLIMIT_FSIZE, _capped(limits.file_bytes, resource.RLIMIT_FSIZE)))

    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the forked child only calls it

    def apply() -> None:
        for kind, value in settings:
            resource.setrlimit(kind, value)
        # The kernel SIGKILLs the child when the thread that started it dies, even by kill -9; if the parent is
        # already gone, the child must not run at all.
        if die_with_parent:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)

    return apply


_PR_SET_PDEATHSIG = 1


def _exited(pid: int) -> bool:
    """True once the child has exited; WNOWAIT leaves it a zombie, so its PID (= our group id) cannot be reused."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _poll_exit(pid: int, stop_reason: Callable[[], _Stop | None]) -> _Stop | None:
    """Wait until the child exits (None) or ``stop_reason`` names a reason to stop waiting (that reason)."""
    pause = 0.01
    while not _exited(pid):
        reason = stop_reason()
        if reason is not None:
            return reason
        time.sleep(pause)
        pause = min(pause * 1.5, 0.1)
    return None


def _wait_until(pid: int, deadline: float) -> bool:
    return _poll_exit(pid, lambda: "timeout" if time.monotonic() >= deadline else None) is None


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is already gone
        os.killpg(pgid, sig)


def _peak_rss_of(pid_dir: Path) -> int:
    try:
        for line in (pid_dir / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass  # gone meanwhile, or a kernel thread without memory
    return 0


def _group_usage(pgid: int) -> tuple[float, int]:
    """(CPU seconds incl. reaped children, largest peak RSS) of the processes now in the group, read from /proc.

    Needed on timeout: killing bwrap's monitor loses its child's rusage, so we read it before the kill.
    """
    tick = os.sysconf("SC_CLK_TCK")
    cpu_s, peak = 0.0, 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        # After the ")" of the command name: state=0, ppid=1, pgrp=2, …, utime=11, stime=12, cutime=13, cstime=14.
        if int(fields[2]) == pgid:
            cpu_s += sum(int(v) for v in fields[11:15]) / tick
            peak = max(peak, _peak_rss_of(stat.parent))
    return cpu_s, peak


def _wait_for_end(pid: int, limits: SandboxLimits, started: float,
                  heartbeat: Path | None) -> _Stop | None:
    """Wait until the child exits (None), runs past its wall limit, or its heartbeat stays silent too long."""
    born = time.time()

    def stop_reason() -> _Stop | None:
        if time.monotonic() - started > limits.wall_s:
            return "timeout"
        if heartbeat is not None and limits.stall_s is not None and silent_for(heartbeat, born) > limits.stall_s:
            return "stalled"
        return None

    return _poll_exit(pid, stop_reason)


def _wait_and_reap(proc: subprocess.Popen[bytes], limits: SandboxLimits, started: float,
                   heartbeat: Path | None = None) -> _Exit:
    stopped = _wait_for_end(proc.pid, limits, started, heartbeat)
    sampled_cpu_s, sampled_peak = 0.0, 0
    if stopped is not None:
        sampled_cpu_s, sampled_peak = _group_usage(proc.pid)
        _killpg(proc.pid, signal.SIGTERM)
        _wait_until(proc.pid, time.monotonic() + limits.kill_grace_s)
    # Sweep the group before reaping the leader, whatever happened: nothing the child started may outlive it.
    _killpg(proc.pid, signal.SIGKILL)
    _, status, rusage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it is reaped
    return _Exit(
        cpu_s=max(rusage.ru_utime + rusage.ru_stime, sampled_cpu_s),
        peak_rss_bytes=max(rusage.ru_maxrss * 1024, sampled_peak),  # Linux reports ru_maxrss in KiB
        stopped=stopped,
        wall_s=time.monotonic() - started,
    )


# --- classification ---------------------------------------------------------------------------------------------------


def _signal_of(returncode: int, isolation: Isolation) -> int | None:
    if returncode < 0:
        return -returncode
    # bubblewrap reports a child killed by signal N as exit code 128 + N.
    if isolation == "bwrap" and 128 < returncode < 128 + signal.NSIG:
        return returncode - 128
    return None


def classify(
    returncode: int, sig: int | None, stopped: _Stop | None, stderr_tail: str, cpu_s: float,
    limits: SandboxLimits,
) -> KilledReason | None:
    """Why the child stopped abnormally (see ``SandboxResult.killed_reason``)."""
    if stopped is not None:
        return stopped
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s >= limits.effective_cpu_s()):
        return "cpu"
    if sig == signal.SIGXFSZ:
        return "file_size"
    if returncode != 0 and any(marker in stderr_tail for marker in MEMORY_MARKERS):
        return "memory"
    if sig == signal.SIGKILL:
        return "memory"  # nobody but the kernel's OOM killer sends SIGKILL to a child we did not kill
    return "signal" if sig is not None else None


def _tail(path: Path, limit: int) -> str:
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - limit))
        return handle.read().decode("utf-8", errors="replace")


# --- entry points -----------------------------------------------------------------------------------------------------


def wrap_argv(argv: Sequence[str], run_dir: Path, isolation: Isolation,
              hidden_paths: Iterable[str] = DEFAULT_HIDDEN_PATHS, read_only: Iterable[Path] = ()) -> list[str]:
    if isolation == "bwrap":
        return [*bwrap_prefix(run_dir, hidden_paths, read_only), *argv]
    if isolation == "unshare":
        return [*unshare_prefix(), *argv]
    return [sys.executable, "-s", str(GUARD), "--", *argv]


def run_sandboxed(
    argv: Sequence[str],
    run_dir: Path,
    limits: SandboxLimits | None = None,
    env_allow: Iterable[str] = (),
    *,
    extra_env: Mapping[str, str] | None = None,
    isolation: Isolation | None = None,
    hidden_paths: Iterable[str] = DEFAULT_HIDDEN_PATHS,
    read_only: Iterable[Path] = (),
    heartbeat: Path | None = None,
) -> SandboxResult:
    """Run ``argv`` sandboxed with ``run_dir`` as its working (and only writable) directory; blocks until it ends.

    stdout/stderr go to ``run_dir/sandbox.{stdout,stderr}.log``; the result carries their tails. With
    ``heartbeat`` (a file the child touches, see ``shared.mixer.heartbeat``) and ``limits.stall_s``, a child that
    stops beating is stopped as ``stalled``.
    """
    limits = limits or SandboxLimits()
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    mode = isolation or detect_isolation()
    if isolation is None and mode == "none" and not unisolated_allowed():
        raise SandboxUnavailable(NO_ISOLATION)
    env = sandbox_env(os.environ, run_dir, env_allow, extra_env)
    if mode != "bwrap":  # without bubblewrap's private /tmp, keep the child's temp files in its run dir
        (run_dir / "tmp").mkdir(exist_ok=True)
        env["TMPDIR"] = str(run_dir / "tmp")
    out_path, err_path = run_dir / "sandbox.stdout.log", run_dir / "sandbox.stderr.log"
    started = time.monotonic()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            wrap_argv(argv, run_dir, mode, hidden_paths, read_only), cwd=run_dir, env=env, stdin=subprocess.DEVNULL,
            stdout=out, stderr=err, start_new_session=True, close_fds=True,
            # Without namespaces the guard, not the kernel, ends the group when we die (see wrap_argv).
            preexec_fn=_rlimit_setter(limits, die_with_parent=mode != "none"),
        )
    ended = _wait_and_reap(proc, limits, started, heartbeat)
    return _result(proc.returncode, ended, mode, limits, out_path, err_path)


def _result(returncode: int, ended: _Exit, mode: Isolation, limits: SandboxLimits,
            out_path: Path, err_path: Path) -> SandboxResult:
    cpu_s = ended.cpu_s
    stderr_tail = _tail(err_path, limits.tail_bytes)
    sig = _signal_of(returncode, mode)
    return SandboxResult(
        returncode=returncode,
        stdout_tail=_tail(out_path, limits.tail_bytes),
        stderr_tail=stderr_tail,
        wall_s=ended.wall_s,
        cpu_s=cpu_s,
        peak_rss_bytes=ended.peak_rss_bytes or None,
        killed_reason=classify(returncode, sig, ended.stopped, stderr_tail, cpu_s, limits),
        signal=sig,
        isolation=mode,
        network_isolated=mode in ("bwrap", "unshare"),
        filesystem_isolated=mode == "bwrap",
        stdout_path=out_path,
        stderr_path=err_path,
    )


def python_argv(target: str | Path, args: Sequence[str] = (), *, module: bool = False) -> list[str]:
    """This venv's interpreter running a file (or ``-m module``): unbuffered, so log tails are current, and with
    faulthandler, so a segfault in generated code still leaves a Python traceback for the debugger."""
    head = [sys.executable, "-u", "-s", "-X", "faulthandler"]
    return [*head, "-m", str(target), *args] if module else [*head, str(target), *args]


def run_python_sandboxed(
    target: str | Path,
    run_dir: Path,
    limits: SandboxLimits | None = None,
    args: Sequence[str] = (),
    *,
    module: bool = False,
    env_allow: Iterable[str] = (),
    extra_env: Mapping[str, str] | None = None,
    isolation: Isolation | None = None,
    hidden_paths: Iterable[str] = DEFAULT_HIDDEN_PATHS,
    read_only: Iterable[Path] = (),
    heartbeat: Path | None = None,
) -> SandboxResult:
    """``run_sandboxed`` for a Python file or module, with the project root importable (``services.…``)."""
    env = dict(extra_env or {})
    inherited = os.environ.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), inherited, str(PROJECT_ROOT)) if p)
    return run_sandboxed(python_argv(target, args, module=module), run_dir, limits, env_allow, extra_env=env,
                         isolation=isolation, hidden_paths=hidden_paths, read_only=read_only, heartbeat=heartbeat)
