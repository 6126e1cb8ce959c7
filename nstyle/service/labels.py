"""What the page calls each option: a readable label, and help without command-line flags.

The help texts in ``nstyle.options.config`` are written for the command line ("overrides --size");
a person on the page knows the fields by their labels, so each ``--flag`` becomes the label
of the field it names. An option added to the config without a label here still gets one,
made from its name.
"""

from __future__ import annotations

import re
from typing import Optional

from nstyle.io.inputs import FILE_FIELDS

LABELS = {
    "content_layers": "Content layers", "content_layer_weights": "Content layer weights",
    "style_layers": "Style layers", "style_layer_weights": "Style layer weights",
    "content_weight": "Content weight", "style_weight": "Style weight",
    "tv_weight": "Smoothness weight",
    "size": "Output size", "style_scale": "Style scale",
    "style_blend_weights": "Style blend weights", "init": "Start from", "seed": "Random seed",
    "optimizer": "Optimizer", "iterations": "Iterations", "lr": "Step size",
    "beta1": "Adam beta 1", "beta2": "Adam beta 2", "eps": "Adam epsilon",
    "history_size": "L-BFGS memory", "tolerance": "Stop when changes fall below",
    "pooling": "Pooling", "padding": "Border padding", "device": "Device", "precision": "Precision",
    "preserve_colors": "Keep the photo's colours", "color_match": "Colour matching",
    "scales": "Sizes, coarse to fine", "scale_iterations": "Iterations per size",
    "fine_layers": "Fine-texture layers", "mix_iterations": "Mixing iterations",
}

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
