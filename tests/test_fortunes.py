"""The fortunes loader: reads the Debian package's files, or says how to install it."""

from __future__ import annotations

import pytest

from framework.datasets import load_fortunes
from framework.datasets.fortunes import fortune_categories
from framework.errors import DataError


def _write(folder, name, quotes):
    (folder / name).write_text("\n%\n".join(quotes) + "\n%\n")
    (folder / (name + ".dat")).write_bytes(b"\0")


def test_reads_a_folder_of_fortune_files(tmp_path):
    _write(tmp_path, "science", ["E = mc^2", "two\nlines"])
    _write(tmp_path, "art", ["Ars longa"])
    (tmp_path / "notes").write_text("no .dat index: not a fortune file")
    assert fortune_categories(tmp_path) == ["art", "science"]
    assert load_fortunes(tmp_path) == ["Ars longa", "E = mc^2", "two\nlines"]
    assert load_fortunes(tmp_path, categories=["science"]) == ["E = mc^2", "two\nlines"]
    with pytest.raises(DataError, match="available: art, science"):
        load_fortunes(tmp_path, categories=["nope"])


def test_missing_package_names_it(tmp_path, monkeypatch):
    monkeypatch.setattr("framework.datasets.fortunes.FORTUNES_DIRS", (str(tmp_path / "none"),))
    monkeypatch.delenv("FRAMEWORK_FORTUNES_DIR", raising=False)
    with pytest.raises(DataError, match="apt-get install -y fortunes"):
        load_fortunes()


def test_installed_package_if_present():
    try:
        quotes = load_fortunes()
    except DataError:
        pytest.skip("the Debian fortunes package is not installed")
    assert len(quotes) > 1000 and all(q.strip() for q in quotes[:100])
