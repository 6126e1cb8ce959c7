"""The built-in gallery: public-domain paintings that ship inside nstyle, usable by name.

    nstyle photo.jpg starry-night -o out.png          # a name where a style file would go
    nstyle photo.jpg --style the-scream -o out.png
    nstyle styles                                      # the list, with what each gives

Someone trying nstyle for the first time has photos but rarely a painting file at hand;
these nine cover the kinds of look style transfer is good at (brush strokes, flat colour,
line, texture). The files are JPEGs of at most 150 KB in ``nstyle/data``; where each came
from and why it may be shipped is in ``nstyle/data/PROVENANCE.md``. A name is looked up
in this fixed table only, so a name can never reach a file outside it (the service serves
these by name).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class Painting:
    """One painting of the gallery."""

    name: str  # what a user types: lower case, words joined by '-'
    title: str
    artist: str
    year: str
    look: str  # what it does to a photo, in a few words
    file: str  # in nstyle/data

    def path(self) -> Path:
        """The installed file (a real file: the package is installed unzipped)."""
        return Path(str(resources.files("nstyle").joinpath("data", self.file)))

    def read_bytes(self) -> bytes:
        return resources.files("nstyle").joinpath("data", self.file).read_bytes()

    @property
    def credit(self) -> str:
        return f"{self.title}, {self.artist}, {self.year}"


PAINTINGS = (
    Painting("starry-night", "The Starry Night", "Vincent van Gogh", "1889",
             "swirling brush strokes, deep blues and yellows", "starry_night.jpg"),
    Painting("the-scream", "The Scream", "Edvard Munch", "1893",
             "wavy bands of hot orange and dark blue", "the_scream.jpg"),
    Painting("composition-vii", "Composition VII", "Wassily Kandinsky", "1913",
             "abstract: bright shapes and black lines everywhere", "composition_vii.jpg"),
    Painting("shipwreck", "A Shipwreck", "J. M. W. Turner", "c. 1805-10",
             "stormy texture, dark green and gold", "shipwreck.jpg"),
    Painting("circus-sideshow", "Circus Sideshow", "Georges Seurat", "1887-88",
             "pointillism: fine dots in muted blue and ochre", "circus_sideshow.jpg"),
    Painting("repast-of-the-lion", "The Repast of the Lion", "Henri Rousseau", "c. 1907",
             "flat colour: dark jungle leaves, crisp edges", "repast_of_the_lion.jpg"),
    Painting("summer-mountains", "Summer Mountains", "attributed to Qu Ding", "c. 1050",
             "ink on silk: soft grey-brown washes and fine lines", "summer_mountains.jpg"),
    Painting("jas-de-bouffan", "Trees and Houses Near the Jas de Bouffan", "Paul Cézanne",
             "1885-86", "patches of colour cut by dark branch lines", "jas_de_bouffan.jpg"),
    Painting("mada-primavesi", "Mäda Primavesi", "Gustav Klimt", "1912-13",
             "decorative pattern: lilac, pink and small flowers", "mada_primavesi.jpg"),
)
BY_NAME = {p.name: p for p in PAINTINGS}


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def find(name: str) -> Optional[Painting]:
    """The painting called ``name`` ('starry-night'; 'Starry_Night' too), or None."""
    return BY_NAME.get(_key(name))


def suggest(name: str) -> Optional[str]:
    """The gallery name closest to a misspelt one, or None when none is close."""
    close = difflib.get_close_matches(_key(name), list(BY_NAME), n=1, cutoff=0.6)
    return close[0] if close else None


def looks_like_a_name(arg: str) -> bool:
    """Whether a command-line argument that is not a file could have meant a painting: no
    folder and no file extension in it ('starry-nite', not 'photos/a.jpg')."""
    return "/" not in arg and "\\" not in arg and "." not in arg


def listing() -> str:
    """What ``nstyle styles`` prints: one painting a line, its name first."""
    width = max(len(p.name) for p in PAINTINGS)
    lines = [f"{p.name:<{width}}  {p.credit}: {p.look}" for p in PAINTINGS]
    return "\n".join(lines)
