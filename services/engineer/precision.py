"""Whether training on this machine's CPU runs under bf16 autocast: measured once per machine, then cached.

On a CUDA GPU training always runs under bf16 autocast. On a CPU it depends on the CPU: with native bf16 (AVX512-BF16,
AMX) a bf16 matmul runs about twice an fp32 one, without it bf16 is emulated and slower. So before its first run at a
profile that allows bf16 (``Profile.cpu_bf16``), the engineer times a few training steps of the profile's model
around the efficiency reference, fp32 and bf16 interleaved in one process, and takes bf16 when it is at least
``MIN_SPEEDUP`` faster. The verdict is cached in ``<data dir>/precision.json`` under the CPU, the torch version, the
profile and the thread count, so a restart does not measure again. Autocast keeps the weights, the gradients and the
optimiser in fp32; the loss it reaches at the cpu profile was compared with fp32's on two seeds (bench/precision.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from shared.mixer.baselines import EFFICIENCY_REFERENCE, baseline_path
from shared.mixer.loader import mixer_factory
from shared.mixer.profiles import Profile

log = logging.getLogger(__name__)

CACHE_FILE = "precision.json"
MIN_SPEEDUP = 1.15


@dataclass(frozen=True)
class PrecisionChoice:
    bf16: bool
    fp32_step_s: float
    bf16_step_s: float

    @property
    def speedup(self) -> float:
        return self.fp32_step_s / max(self.bf16_step_s, 1e-12)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_key(profile: Profile, threads: int) -> str:
    return f"{cpu_name()} | torch {torch.__version__} | {profile.name} | {threads} threads"


def measure(profile: Profile, threads: int, pairs: int = 3) -> PrecisionChoice:
    """fp32 against bf16 autocast on the profile's model, steps interleaved, CPU time."""
    from services.engineer.trainer import interleaved_step_times

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        factory = mixer_factory(baseline_path(EFFICIENCY_REFERENCE))
        setups = [(factory, profile.with_overrides(cpu_bf16=False)), (factory, profile.with_overrides(cpu_bf16=True))]
        fp32_s, bf16_s = interleaved_step_times(setups, profile.vocab_size, torch.device("cpu"), pairs)
    finally:
        torch.set_num_threads(previous)
    timed = PrecisionChoice(bf16=False, fp32_step_s=fp32_s, bf16_step_s=bf16_s)
    return dataclasses.replace(timed, bf16=timed.speedup >= MIN_SPEEDUP)


def cpu_bf16(profile: Profile, threads: int, data_dir: Path) -> bool:
    """Whether a run at ``profile`` on this CPU trains under bf16 autocast (measured once, then read back)."""
    if not profile.cpu_bf16 or torch.cuda.is_available():
        return False
    cache = data_dir / CACHE_FILE
    key = cache_key(profile, threads)
    known = read_cache(cache)
    if key in known:
        return bool(known[key]["bf16"])
    choice = measure(profile, threads)
    log.info("precision on this CPU at %s: fp32 step %.3f s, bf16 %.3f s (%.2fx): training in %s", profile.name,
             choice.fp32_step_s, choice.bf16_step_s, choice.speedup, "bf16" if choice.bf16 else "fp32")
    known[key] = asdict(choice)
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(known, indent=2))
    tmp.replace(cache)
    return choice.bf16


def read_cache(path: Path) -> dict[str, dict[str, float]]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
