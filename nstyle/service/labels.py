"""What the page calls each option: a readable label, and help without command-line flags.

Each option carries its label (``option(..., label=...)`` in ``nstyle.options.config``);
the file fields carry theirs in ``nstyle.io.inputs``. The help texts are written for the
command line ("overrides --size"); a person on the page knows the fields by their labels,
so each ``--flag`` becomes the label of the field it names.
"""

from __future__ import annotations

import re
from typing import Optional

from nstyle.options.inputs import FILE_FIELDS
from nstyle.options.config import iter_options

#: every option's label, by name
LABELS = {o.name: o.label for o in iter_options()}

SECTIONS = {"loss": "Loss", "image": "Image", "optim": "Optimizer", "model": "Network",
            "color": "Colour", "scale": "Sizes and scale mixing"}

_FLAG = re.compile(r"--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")


def label(name: str) -> str:
    if name in LABELS:
        return LABELS[name]
    if name in FILE_FIELDS:
        return FILE_FIELDS[name].label.capitalize()
    return name.replace("_", " ").capitalize()


def readable(text: Optional[str]) -> Optional[str]:
    """``text`` with every ``--flag-name`` replaced by that field's label, in quotes."""
    if text is None:
        return None
    return _FLAG.sub(lambda m: f"“{label(m.group(1).replace('-', '_'))}”", text)
