"""The documentation stands on its own: a short README for users, docs/ for the rest, links that
resolve, no pointer to a method description outside the repository, and docs/results.md generated
from the committed benchmark results (benchmarks/results_doc.py --check)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 200
# The paper's own notes live outside the repository; nothing here may send a reader there.
OUTSIDE_METHOD = "METHOD" + ".md"
# What the repository's text files are (build outputs, data, caches and venvs excluded).
SCANNED_TOP = (
    "README.md",
    "Makefile",
    "pyproject.toml",
    ".ci",
    "benchmarks",
    "conf",
    "docs",
    "notebooks",
    "src",
    "tests",
)
SKIPPED_PARTS = {"__pycache__", ".ipynb_checkpoints", "local", ".pytest_cache"}
TEXT_SUFFIXES = {".md", ".py", ".yml", ".yaml", ".toml", ".ipynb", ".sh", ".txt", ".cfg", ".ini", ""}

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~)")


def _markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md")), ROOT / "notebooks" / "README.md"]


def _outside_code(text: str) -> str:
    """The text without fenced code blocks and inline code spans (links there are not links)."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            kept.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(kept)


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a markdown file: lower case, punctuation dropped, spaces -> '-'."""
    anchors = set()
    fenced = False
    for line in path.read_text().splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6}\s+(.*)", line)):
            anchors.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return anchors


def _repository_text_files():
    for top in SCANNED_TOP:
        path = ROOT / top
        candidates = (
            [path]
            if path.is_file()
            else sorted(p for p in path.rglob("*") if p.is_file())
            if path.is_dir()
            else []
        )
        for p in candidates:
            rel = p.relative_to(ROOT)
            if SKIPPED_PARTS & set(rel.parts) or any(part.endswith(".egg-info") for part in rel.parts):
                continue
            if (
                rel.parts[:2] == ("benchmarks", "results")
                and len(rel.parts) > 2
                and rel.parts[2].startswith("lopo_")
            ):
                continue  # the benchmark's scratch project (ignored by git)
            if p.suffix in TEXT_SUFFIXES:
                yield p


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, (
        f"README.md has {n} lines (at most {MAX_README_LINES}: move details into docs/)"
    )


def test_docs_exist():
    for name in ("method.md", "results.md", "benchmarks.md", "data.md", "architecture.md"):
        assert (DOCS / name).is_file(), f"docs/{name} is missing"


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path: Path):
    broken = []
    for target in LINK.findall(_outside_code(path.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target} (no file {linked})")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target} (no heading #{anchor} in {linked.name})")
    assert not broken, f"{path.relative_to(ROOT)}: broken links: {broken}"


def test_nothing_points_at_a_method_file_outside_the_repository():
    this = Path(__file__).resolve()
    citing = []
    for p in _repository_text_files():
        if p.resolve() == this:
            continue
        try:
            text = p.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        if OUTSIDE_METHOD in text:
            citing.append(p.relative_to(ROOT).as_posix())
    assert not citing, f"cite docs/method.md instead of {OUTSIDE_METHOD}: {citing}"


def test_results_doc_is_up_to_date(capsys):
    spec = importlib.util.spec_from_file_location("results_doc", ROOT / "benchmarks" / "results_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main(["--check"])
    assert code == 0, capsys.readouterr().err
    text = (DOCS / "results.md").read_text()
    assert text.startswith("<!-- generated by benchmarks/results_doc.py — do not edit")
    assert "simulated" in text and ".venv/bin/python benchmarks/bench_lopo_seeds.py --seeds 0 1 2" in text
