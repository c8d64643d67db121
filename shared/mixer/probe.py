"""Does a draft pass the engineer's checks, and does it compute the same as a known mixer? Sandboxed.

The researcher asks this before it publishes a proposal, so a draft that fails a check (a name left undefined, a
shape that breaks at one token) or a copy of the parent in disguise goes back to the LLM as a revision, costing
one reply where the engineer and the debugger would spend a training attempt and several. The child side
(``python -m shared.mixer.probe``) imports the draft; the parent side (``probe_draft``) only starts it and reads
``probe.json``, so LLM-written code never runs in the caller's process.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from shared.mixer.sandbox import GIB, SandboxLimits, run_python_sandboxed

PROBE_FILE = "probe.json"
DRAFT_FILE = "draft.py"
# What a failed check shows the LLM: enough for the message and the draft's frames, not a page of them.
FAILED_CHECK_CHARS = 1600
PROBE_LIMITS = SandboxLimits(wall_s=120.0, memory_bytes=4 * GIB)


@dataclass(frozen=True)
class ProbeOutcome:
    same_as: str | None = None  # the label of the known mixer whose outputs the draft reproduces
    # The engineer's check the draft fails, with its message and the draft's own traceback ("" when it passed,
    # or when the probe could not run it to the end: the engineer then reports what is wrong in full).
    failed_check: str = ""


def probe_draft(code: str, known: dict[str, str], profile: str, *, check_profile: str | None = None,
                checks: bool = True, baselines: bool = True, work_dir: Path | None = None) -> ProbeOutcome:
    """The engineer's checks on the draft at ``check_profile`` (the profile it will train at; ``profile`` when
    None), then the first known mixer (label -> source) or baseline whose outputs it reproduces at ``profile``. A
    draft that fails a check is compared with nothing. ``checks=False``: compare only (a draft already checked)."""
    with tempfile.TemporaryDirectory(prefix="probe-", dir=work_dir) as tmp:
        run_dir = Path(tmp)
        (run_dir / DRAFT_FILE).write_text(code)
        args = ["--source", DRAFT_FILE, "--profile", profile, "--check-profile", check_profile or profile]
        if not checks:
            args.append("--no-checks")
        for i, (label, source) in enumerate(known.items()):
            (run_dir / f"known_{i}.py").write_text(source)
            args += ["--against", label, f"known_{i}.py"]
        if baselines:
            args.append("--against-baselines")
        run_python_sandboxed("shared.mixer.probe", run_dir, PROBE_LIMITS, args, module=True)
        try:
            found = json.loads((run_dir / PROBE_FILE).read_text())
        except (OSError, ValueError):
            return ProbeOutcome()
        return ProbeOutcome(same_as=found.get("same_as"), failed_check=found.get("failed_check") or "")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Compare a mixer's outputs with known mixers' (runs sandboxed).")
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--profile", required=True, help="the profile outputs are compared at")
    parser.add_argument("--check-profile", help="the profile the checks run at (default: --profile)")
    parser.add_argument("--against", nargs=2, action="append", default=[], metavar=("LABEL", "FILE"))
    parser.add_argument("--against-baselines", action="store_true")
    parser.add_argument("--no-checks", dest="checks", action="store_false", help="compare outputs only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    outcome: dict[str, str | None] = {"same_as": None, "failed_check": None, "error": None}
    try:
        outcome["failed_check"] = failed_check(args) if args.checks else None
        if outcome["failed_check"] is None:
            outcome["same_as"] = first_match(args)
    except Exception as exc:  # the draft's own failure outside the checks: reported, not raised
        outcome["error"] = f"{type(exc).__name__}: {exc}"
    Path(PROBE_FILE).write_text(json.dumps(outcome))
    return 0


def failed_check(args: argparse.Namespace) -> str | None:
    """The engineer's checks on the draft: the failure as the LLM should read it (None when they pass)."""
    import torch

    from shared.mixer.checks import run_checks
    from shared.mixer.frames import candidate_traceback
    from shared.mixer.profiles import get_profile

    torch.set_num_threads(1)
    report = run_checks(args.source, get_profile(args.check_profile or args.profile))
    if report.passed:
        return None
    shown = candidate_traceback(report.error, args.source) if report.error is not None else ""
    # The message's start and the traceback's end (the draft's failing line and what it raised) matter most.
    half = FAILED_CHECK_CHARS // 2
    return f"it fails the {report.kind} check: {report.message[:half]}" + (f"\n{shown[-half:]}" if shown else "")


def first_match(args: argparse.Namespace) -> str | None:
    from shared.mixer.baselines import BASELINES, load_baseline
    from shared.mixer.behaviour import behaviour_signature, same_behaviour
    from shared.mixer.loader import load_module, mixer_class
    from shared.mixer.profiles import get_profile

    profile = get_profile(args.profile)
    draft = behaviour_signature(mixer_class(load_module(args.source)), profile.d_model, profile.n_heads)
    classes = [(label, lambda path=path: mixer_class(load_module(path))) for label, path in args.against]
    if args.against_baselines:
        classes += [(f"the {name} baseline", lambda name=name: load_baseline(name).Mixer) for name in BASELINES]
    for label, load in classes:
        try:
            known = behaviour_signature(load(), profile.d_model, profile.n_heads)
        except Exception:  # a known mixer that no longer runs here cannot be copied
            continue
        if same_behaviour(draft, known):
            return label
    return None


if __name__ == "__main__":
    raise SystemExit(main())
