from __future__ import annotations

import pytest

from tpir_kedro.atomic_folder import new_folder_atomically


def test_the_folder_appears_whole_or_not_at_all(tmp_path):
    root = tmp_path / "out"
    with new_folder_atomically(root) as staging:
        (staging / "a.txt").write_text("a")
        assert not root.exists()
    assert (root / "a.txt").read_text() == "a"

    with pytest.raises(RuntimeError), new_folder_atomically(tmp_path / "failed") as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no folder, no staging left behind

    with (
        pytest.raises(FileExistsError, match="refusing to overwrite the results"),
        new_folder_atomically(root, "the results"),
    ):
        pass
    assert (root / "a.txt").read_text() == "a"
