import os
import stat

import pytest

from pipeline.files import atomic_dir, atomic_path, sha256_file, write_json_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "model.keras"
    target.write_bytes(b"old, good model")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a new mod")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old, good model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_a_finished_write_replaces_the_file_and_keeps_the_suffix_while_writing(tmp_path):
    target = tmp_path / "sub" / "metrics.json"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".json" and tmp.parent == target.parent and not target.exists()
        tmp.write_text("{}", encoding="utf-8")
    assert target.read_text(encoding="utf-8") == "{}"
    write_json_atomic(target, {"accuracy": 0.5, "label": "긍정"})
    assert '"긍정"' in target.read_text(encoding="utf-8")
    assert len(sha256_file(target)) == 64


def test_a_failed_folder_write_keeps_the_old_folder_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    (target / "saved_model.pb").write_bytes(b"old export")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "saved_model.pb").write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert [p.name for p in target.iterdir()] == ["saved_model.pb"]
    assert (target / "saved_model.pb").read_bytes() == b"old export"
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_a_finished_folder_write_replaces_the_whole_folder(tmp_path):
    target = tmp_path / "sub" / "export"
    with atomic_dir(target) as tmp:
        assert tmp.parent == target.parent and not target.exists() and not any(tmp.iterdir())
        (tmp / "a").write_text("first", encoding="utf-8")
    with atomic_dir(target) as tmp:
        (tmp / "b").write_text("second", encoding="utf-8")
    assert [p.name for p in target.iterdir()] == ["b"]
    assert [p.name for p in target.parent.iterdir()] == ["export"]


def test_written_files_get_the_permissions_of_any_new_file(tmp_path):
    """A model written as 0600 could not be read by a service running as another user."""
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "metrics.json", {})
        with atomic_dir(tmp_path / "export") as folder:
            (folder / "x").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "export").stat().st_mode) == 0o755
