"""A digest of the code that shapes trained weights, for the run and feature-cache keys.

A cached run is reused when its key matches. The key hashes the parameters and the data; without the
code, a run trained before a change to a loss, a head or the augmentation would be silently reused
after it. Hashing the source of this package (every ``.py`` file under ``tpir_kedro/models``) covers
all of that and works the same from a git checkout, an sdist or a wheel. It over-invalidates (a
docstring edit retrains), which is the safe direction for a cache.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

MODELS_PACKAGE = Path(__file__).resolve().parent


def source_digest(package_dir: str | Path) -> str:
    """sha256 (16 hex digits) over the relative paths and bytes of every ``*.py`` under ``package_dir``,
    in sorted order, so it depends on what the files say and nothing else (not mtimes, not order).
    """
    root = Path(package_dir)
    files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    if not files:
        raise ValueError(f"no Python source under {root}: cannot fingerprint the training code")
    h = hashlib.sha256()
    for path in files:
        h.update(path.relative_to(root).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


@lru_cache(maxsize=1)
def models_code_digest() -> str:
    """:func:`source_digest` of the installed ``tpir_kedro.models`` package (computed once per process)."""
    return source_digest(MODELS_PACKAGE)
