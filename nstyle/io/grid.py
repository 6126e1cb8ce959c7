"""Labelled image grids: the explore figures and the contact sheet, drawn with Pillow.

    grid = Grid(title="relu3_1: what its units respond to", column_labels=[...], row_labels=[...])
    grid.add_row([Cell(img, "ch 0"), Cell(img2, "ch 1"), Cell(None, "failed")])
    picture = grid.render(cell=128)

Every picture is fitted into the same square box (aspect ratio kept, centred on white;
a row is as tall as its tallest picture); a cell without an image is a grey box with its label (a cell still queued, or one that
failed), so a partial grid has the final grid's layout. Labels are what makes these
figures readable to someone choosing layers or weights: each cell may carry one under it,
each column a heading, each row a name on its left.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from PIL import Image, ImageDraw, ImageFont

from nstyle.io.images import check_output_path, fit_size, resize, save_image, save_json

BACKGROUND = (255, 255, 255)
PLACEHOLDER = (222, 222, 222)
TEXT = (20, 20, 20)
MUTED = (90, 90, 90)
#: space between cells and around the grid, in pixels
GAP = 6


@dataclass
class Figure:
    """A finished figure and its run record (what made it, so it can be made again)."""

    image: Image.Image
    record: dict[str, Any]

    def save(self, path: Union[str, os.PathLike], command: Optional[Sequence[str]] = None) -> Path:
        """The image at ``path`` and its record at ``path``.json, each written atomically."""
        out = check_output_path(path)
        save_image(self.image, out)
        record = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                  "command": list(command) if command is not None else None,
                  "output": str(out), "output_size": list(self.image.size), **self.record}
        save_json(record, str(out) + ".json")
        return out


@dataclass
class Cell:
    image: Optional[Image.Image]
    label: str = ""
    #: (width, height) a cell without an image will have, so a partial grid keeps its layout
    shape: Optional[tuple[int, int]] = None


@dataclass
class Grid:
    title: str = ""
    column_labels: Sequence[str] = ()
    rows: list[list[Cell]] = field(default_factory=list)
    row_labels: list[str] = field(default_factory=list)

    def add_row(self, cells: Sequence[Cell], label: str = "") -> None:
        self.rows.append(list(cells))
        self.row_labels.append(label)

    def layout(self) -> dict[str, Any]:
        """What is where, for a run record: the row names and every cell's label."""
        return {"columns": list(self.column_labels), "rows": list(self.row_labels),
                "cells": [[c.label for c in row] for row in self.rows]}

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        return len(self.rows), max((len(r) for r in self.rows), default=0)

    def render(self, cell: int = 128) -> Image.Image:
        """The grid as one RGB image, every picture fitted into a ``cell`` x ``cell`` box;
        a row is only as tall as its tallest picture (wide images make low rows)."""
        n_rows, n_cols = self.shape
        if not n_rows or not n_cols:
            raise ValueError("a grid needs at least one cell")
        font_size = max(10, min(16, cell // 9))
        font, small = _font(font_size), _font(max(9, font_size - 2))
        # a grey box carries its label inside: only pictures take a line under them
        has_cell_labels = any(c.label and c.image is not None for row in self.rows for c in row)
        label_h = _line_height(small) + 2 if has_cell_labels else 0
        left = _row_label_width(self.row_labels, font, cell)
        title_h = _line_height(font) + GAP if self.title else 0
        head_h = _line_height(font) + 2 if any(self.column_labels) else 0
        heights = [_row_height(row, cell) for row in self.rows]
        pitch_x = cell + GAP
        width = GAP + left + n_cols * pitch_x
        height = GAP + title_h + head_h + sum(h + label_h + GAP for h in heights)
        sheet = Image.new("RGB", (width, height), BACKGROUND)
        draw = ImageDraw.Draw(sheet)
        if self.title:
            draw.text((GAP, GAP), _clip(self.title, font, width - 2 * GAP), fill=TEXT, font=font)
        y = GAP + title_h
        for j, heading in enumerate(self.column_labels[:n_cols]):
            x = GAP + left + j * pitch_x
            draw.text((x + cell // 2, y), _clip(heading, font, cell), fill=TEXT, font=font,
                      anchor="ma")
        y += head_h
        for i, row in enumerate(self.rows):
            if self.row_labels[i]:
                _draw_row_label(draw, self.row_labels[i], font, (GAP, y), left - GAP, heights[i])
            for j, c in enumerate(row):
                x = GAP + left + j * pitch_x
                _paste_cell(sheet, draw, c, (x, y), (cell, heights[i]), small)
                if c.label and c.image is not None:
                    draw.text((x + cell // 2, y + heights[i] + 1), _clip(c.label, small, cell),
                              fill=MUTED, font=small, anchor="ma")
            y += heights[i] + label_h + GAP
        return sheet


def _row_height(row: Sequence[Cell], cell: int) -> int:
    fitted = [fit_size(*(c.image.size if c.image is not None else c.shape), cell)[1]
              for c in row if c.image is not None or c.shape is not None]
    return max(fitted) if fitted else cell


def _paste_cell(sheet: Image.Image, draw: ImageDraw.ImageDraw, c: Cell, at: tuple[int, int],
                box: tuple[int, int], font) -> None:
    (x, y), (bw, bh) = at, box
    if c.image is None:
        draw.rectangle((x, y, x + bw - 1, y + bh - 1), fill=PLACEHOLDER)
        if c.label:  # what the box stands for: "to come", "failed"
            draw.text((x + bw // 2, y + bh // 2), _clip(c.label, font, bw - 4), fill=MUTED,
                      font=font, anchor="mm")
        return
    img = c.image.convert("RGB")
    w, h = fit_size(img.width, img.height, max(bw, bh))
    if h > bh:  # taller than the row: fit the height instead
        w, h = fit_size(img.width, img.height, max(1, round(bh * max(img.size) / img.height)))
    img = resize(img, (w, h))
    sheet.paste(img, (x + (bw - w) // 2, y + (bh - h) // 2))


def _font(size: int):
    # Pillow's built-in font (no file to ship): scalable where Pillow has FreeType
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # old Pillow or no FreeType: the bitmap font
        return ImageFont.load_default()


def _line_height(font) -> int:
    box = font.getbbox("Ag")
    return box[3] - box[1] + 4


def _text_width(text: str, font) -> int:
    box = font.getbbox(text)
    return box[2] - box[0]


def _clip(text: str, font, width: int) -> str:
    """``text`` cut with an ellipsis so it fits ``width`` pixels."""
    if _text_width(text, font) <= width:
        return text
    while len(text) > 1 and _text_width(text + "…", font) > width:
        text = text[:-1]
    return text + "…"


def _row_label_width(labels: Sequence[str], font, cell: int) -> int:
    """Room for the row names: as wide as the widest line, but at most one cell."""
    lines = [line for label in labels for line in label.split("\n") if line]
    if not lines:
        return 0
    return min(cell, max(_text_width(line, font) for line in lines)) + GAP


def _draw_row_label(draw, label: str, font, at: tuple[int, int], width: int, cell: int) -> None:
    """A row's name, one line per '\\n' part, vertically centred on the row."""
    lines = [_clip(line, font, width) for line in label.split("\n")]
    step = _line_height(font)
    y = at[1] + (cell - step * len(lines)) // 2
    for k, line in enumerate(lines):
        draw.text((at[0], y + k * step), line, fill=TEXT, font=font)
