"""The built-in paintings: shipped, small, credited, and found by name."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nstyle.io import gallery

DATA = gallery.PAINTINGS[0].path().parent  # nstyle/data


def test_every_painting_ships_small_and_decodes():
    assert 6 <= len(gallery.PAINTINGS) <= 10
    for p in gallery.PAINTINGS:
        data = p.read_bytes()
        assert len(data) <= 150_000, p.name
        with Image.open(p.path()) as img:
            assert img.format == "JPEG" and img.mode == "RGB" and max(img.size) <= 640, p.name
            # a picture, not a flat placeholder
            assert np.asarray(img).std() > 10, p.name


def test_every_shipped_image_has_its_provenance_and_is_in_the_table():
    provenance = (DATA / "PROVENANCE.md").read_text()
    shipped = {f.name for f in DATA.glob("*.jpg")}
    assert shipped == {p.file for p in gallery.PAINTINGS}
    for p in gallery.PAINTINGS:
        row = next(line for line in provenance.splitlines() if line.startswith(f"| `{p.file}`"))
        assert p.artist.split()[-1] in row  # the painter, named where the file is described
        assert re.search(r"sha256|blob", row), row  # which source file, exactly


def test_names_are_found_forgivingly_and_misspellings_get_a_suggestion():
    assert gallery.find("starry-night").file == "starry_night.jpg"
    assert gallery.find("Starry_Night") is gallery.find("starry night") is gallery.BY_NAME["starry-night"]
    assert gallery.find("../cli.py") is None and gallery.find("starry_night.jpg") is None
    assert gallery.suggest("starry-nite") == "starry-night"
    assert gallery.suggest("kandinsky-banana") is None
    assert gallery.looks_like_a_name("the-scream")
    assert not gallery.looks_like_a_name("photos/a.jpg") and not gallery.looks_like_a_name("a.jpg")


def test_listing_names_every_painting_once():
    lines = gallery.listing().splitlines()
    assert [line.split()[0] for line in lines] == [p.name for p in gallery.PAINTINGS]
    assert "Vincent van Gogh" in lines[0]
