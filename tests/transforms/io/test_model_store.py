"""Folders for the sinks and the model store, made by whichever worker comes first."""

from __future__ import annotations

import pytest
from apache_beam.io.filesystems import FileSystems

from transforms.io.model_store import ensure_dir


def test_a_folder_made_by_another_writer_between_check_and_mkdirs_is_fine(tmp_path, monkeypatch):
    folder = tmp_path / "dead_letter"
    folder.mkdir()  # another worker was first
    real = FileSystems.exists
    calls = []

    def checked_too_early(path):  # the check ran just before that worker made it
        calls.append(path)
        return real(path) if len(calls) > 1 else False

    monkeypatch.setattr(FileSystems, "exists", staticmethod(checked_too_early))
    ensure_dir(str(folder))
    assert len(calls) == 2


def test_a_folder_that_cannot_be_made_is_still_an_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError):
        ensure_dir(str(tmp_path / "file" / "sub"))
