"""The import rule of docs/architecture.md: imports point down the data flow
(cohort -> imaging -> models -> evaluation -> reporting, with Kedro's pipelines and datasets on top),
and the domain packages do not import Kedro. Read from the source, lazy imports inside functions
included, so a breach fails here rather than in a reviewer's head."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tpir_kedro"
UTILITIES = {"atomic_folder", "quiet_logs", "typed_settings"}  # small top-level helpers any layer may use

# What each domain package may import from the project, besides itself and the utilities.
ALLOWED = {
    "cohort": set(),
    "imaging": {"cohort"},
    "models": {"cohort", "imaging"},
    "evaluation": {"cohort", "imaging", "models"},
    "reporting": {"cohort", "imaging", "models", "evaluation"},
}
KEDRO = ("kedro", "kedro_datasets", "kedro_viz")


def _imports(path: Path):
    """(line, module) of every import in ``path``, absolute names (the project uses no relative imports)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            yield node.lineno, node.module


def _breaches(layer: str) -> list[str]:
    out = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for line, module in _imports(path):
            parts = module.split(".")
            where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
            if parts[0] in KEDRO:
                out.append(where + " (domain code is free of Kedro)")
            elif (
                parts[0] == "tpir_kedro"
                and len(parts) > 1
                and parts[1] not in {layer, *UTILITIES, *ALLOWED[layer]}
            ):
                out.append(where + f" ({layer}/ may import {sorted(ALLOWED[layer]) or 'no other layer'})")
    return out


def test_every_domain_package_imports_only_what_lies_upstream_of_it_and_never_kedro():
    breaches = [b for layer in ALLOWED for b in _breaches(layer)]
    assert not breaches, "\n".join(breaches)


def test_the_rule_sees_a_breach(tmp_path, monkeypatch):
    fake = tmp_path / "tpir_kedro"
    (fake / "cohort").mkdir(parents=True)
    (fake / "cohort" / "bad.py").write_text(
        "def f():\n    from tpir_kedro.models.losses import info_nce\n    import kedro\n"
    )
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    found = _breaches("cohort")
    assert len(found) == 2 and "tpir_kedro.models.losses" in found[0] and "Kedro" in found[1]


def _pipeline_breaches() -> list[str]:
    """Imports of one pipeline's modules from another pipeline's."""
    out = []
    for folder in sorted(p for p in (PACKAGE / "pipelines").iterdir() if (p / "__init__.py").is_file()):
        for path in sorted(folder.rglob("*.py")):
            for line, module in _imports(path):
                parts = module.split(".")
                if parts[:2] == ["tpir_kedro", "pipelines"] and len(parts) > 2 and parts[2] != folder.name:
                    out.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    return out


def test_no_pipeline_imports_another_pipeline():
    breaches = _pipeline_breaches()
    assert not breaches, "\n".join(breaches) + "\n(what two pipelines share belongs in a domain package)"
