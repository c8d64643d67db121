"""Does a draft compute the same as a known mixer? The behaviour probe of the checks, on its own and sandboxed.

The researcher asks this before it publishes a proposal, so a copy of the parent in disguise goes back to the LLM
as a revision instead of reaching the engineer as a duplicate. The child side (``python -m
shared.mixer.probe``) imports the draft; the parent side (``same_computation``) only starts it and reads
``probe.json``, so LLM-written code never runs in the caller's process.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from shared.mixer.sandbox import GIB, SandboxLimits, run_python_sandboxed

PROBE_FILE = "probe.json"
PROBE_LIMITS = SandboxLimits(wall_s=120.0, memory_bytes=4 * GIB)


def same_computation(code: str, known: dict[str, str], profile: str, *, baselines: bool = True,
                     work_dir: Path | None = None) -> str | None:
    """The label of the first known mixer (label -> source) or baseline whose outputs the draft reproduces.

    None when it matches none, and also when the draft cannot be probed (it raises, times out): such a draft is
    no copy, and the engineer's checks report what is wrong with it in full.
    """
    with tempfile.TemporaryDirectory(prefix="probe-", dir=work_dir) as tmp:
        run_dir = Path(tmp)
        (run_dir / "draft.py").write_text(code)
        args = ["--source", "draft.py", "--profile", profile]
        for i, (label, source) in enumerate(known.items()):
            (run_dir / f"known_{i}.py").write_text(source)
            args += ["--against", label, f"known_{i}.py"]
        if baselines:
            args.append("--against-baselines")
        run_python_sandboxed("shared.mixer.probe", run_dir, PROBE_LIMITS, args, module=True)
        try:
            return json.loads((run_dir / PROBE_FILE).read_text()).get("same_as")
        except (OSError, ValueError):
            return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Compare a mixer's outputs with known mixers' (runs sandboxed).")
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--against", nargs=2, action="append", default=[], metavar=("LABEL", "FILE"))
    parser.add_argument("--against-baselines", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    outcome: dict[str, str | None] = {"same_as": None, "error": None}
    try:
        outcome["same_as"] = first_match(args)
    except Exception as exc:  # the draft's own failure: reported, not raised
        outcome["error"] = f"{type(exc).__name__}: {exc}"
    Path(PROBE_FILE).write_text(json.dumps(outcome))
    return 0


def first_match(args: argparse.Namespace) -> str | None:
    import torch

    from shared.mixer.baselines import BASELINES, load_baseline
    from shared.mixer.behaviour import behaviour_signature, same_behaviour
    from shared.mixer.loader import load_module, mixer_class
    from shared.mixer.profiles import get_profile

    torch.set_num_threads(1)
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
