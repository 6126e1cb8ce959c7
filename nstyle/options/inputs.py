"""The input files a run may take besides the photo and the style images (masks, a
starting image, the scale-mixing pair): one description shared by the CLI's flags, the
Python API's keywords and the service's upload fields. No torch, no PIL: the command line
builds its parser from it before anything heavy is imported."""

from __future__ import annotations

from dataclasses import dataclass

#: the word that stands for "this style has no mask" in a list of masks
NO_MASK = "none"


@dataclass(frozen=True)
class InputField:
    """One kind of input file: the same description for the CLI, the API and the service."""

    name: str  # the keyword of Inputs and the Python API, and the HTTP upload field
    label: str  # what a person calls it (the page, error messages)
    help: str
    mask: bool = False  # a grayscale mask (white = selected) rather than a picture
    per_style: bool = False  # one per style image, in order


INPUT_FIELDS = (
    InputField("style_masks", "style mask", "one mask per style image, in order: grayscale, any "
               "size, white where that style goes; a style without a mask covers what no mask "
               "claims", mask=True, per_style=True),
    InputField("keep_mask", "keep mask", "content regions to leave unstylized: white keeps the "
               "photo there (any size)", mask=True),
    InputField("init_image", "starting image", "an image to start the optimization from instead "
               "of the photo, noise or gray (resized to the output)"),
    InputField("fine_style", "fine style", "with a coarse style: its fine texture and the coarse "
               "style's large structures are mixed into one more style image (the paper's scale "
               "mixing)"),
    InputField("coarse_style", "coarse style", "with a fine style: the image whose coarse "
               "structure the mixed style keeps"),
)
FILE_FIELDS = {f.name: f for f in INPUT_FIELDS}
