"""VGG19's layer names and geometry: pure data, no torch.

The options validate layer names against this table and the network (``nstyle.core.vgg``)
is built from it, so the option tree can name layers without importing torch. Layer names
follow neural-style (conv1_1, relu1_1, ..., pool1, ..., relu5_4).
"""

from __future__ import annotations

import difflib
import math

from nstyle.errors import BadOption

#: conv layers per block, as in VGG19 ("E" configuration)
BLOCKS = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))

#: how a convolution may pad the border (torch's names): the original network pads with
#: zeros, which in the mean-subtracted input is a grey frame around the image
PADDING_MODES = ("zeros", "reflect", "replicate")

def _layer_names() -> tuple[str, ...]:
    names: list[str] = []
    for block, (_, convs) in enumerate(BLOCKS, start=1):
        for conv in range(1, convs + 1):
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
        if block < len(BLOCKS):  # pool5 feeds only the classifier, which we don't have
            names.append(f"pool{block}")
    return tuple(names)


#: every layer name the feature extractor can return, in network order
LAYER_NAMES: tuple[str, ...] = _layer_names()
LAYER_INDEX = {name: i for i, name in enumerate(LAYER_NAMES)}
CONV_LAYERS: tuple[str, ...] = tuple(n for n in LAYER_NAMES if n.startswith("conv"))


def check_layer_names(names, what: str = "layer") -> None:
    """Raise ``BadOption`` naming the first unknown layer, with a "did you mean" hint."""
    for name in names:
        if name not in LAYER_INDEX:
            close = difflib.get_close_matches(name, LAYER_NAMES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise BadOption(
                f"unknown {what} {name!r}{hint}; run 'nstyle layers' to list valid names"
            )


# --------------------------------------------------------------------------- geometry
# Everything that depends on the network's shape lives here: channels, poolings, strides,
# receptive fields, and the pixel alignment that keeps a tile's poolings on the whole
# image's grid (regions.py, tiling.py, plan.py and config.py read it from here).

#: VGG19 pools 2x2 four times before conv5_1: windows that start on multiples of this
#: pool on the same grid as the whole image (tile cores, see ``nstyle.core.tiling``)
ALIGN = 16


def layer_channels(name: str) -> int:
    """Number of channels of a layer's output."""
    check_layer_names([name])
    return BLOCKS[int(name[4]) - 1][0]  # every name is conv/relu/pool + block digit


def pools_before(layer: str) -> int:
    """How many 2x2 poolings lie between the input and ``layer``'s output."""
    check_layer_names([layer])
    return sum(1 for name in LAYER_NAMES[: LAYER_INDEX[layer] + 1] if name.startswith("pool"))


def layer_stride(layer: str) -> int:
    """Pixels per feature position at ``layer``."""
    return 2 ** pools_before(layer)


def receptive_radius(layer: str) -> int:
    """How far (in pixels) beyond its own cell a ``layer`` feature looks."""
    check_layer_names([layer])
    radius, stride = 0, 1
    for name in LAYER_NAMES[: LAYER_INDEX[layer] + 1]:
        if name.startswith("conv"):  # 3x3, padding 1: one more position at this stride
            radius += stride
        elif name.startswith("pool"):  # 2x2 stride 2: one more position, then coarser
            radius += stride
            stride *= 2
    return radius


def halo_for(layers) -> int:
    """Margin (a multiple of ALIGN) around a tile core that makes the deepest of ``layers``
    exact there: at least its receptive-field radius."""
    radius = max(receptive_radius(layer) for layer in layers)
    return ALIGN * math.ceil((radius + 1) / ALIGN)


def last_needed_layer(layers) -> str:
    """The deepest of ``layers`` in network order."""
    check_layer_names(layers)
    return max(layers, key=LAYER_INDEX.__getitem__)


#: the layer whose network the run-time estimates count as one whole pass (the default
#: style layers' deepest)
FULL_PASS_LAYER = "relu5_1"


#: what one activation value a convolution writes costs besides its multiply-adds (its
#: ReLU, padding, the loss and the memory traffic, all worth more at the large shallow
#: layers), in multiply-adds: fitted to two measured time ratios at 512 px, the network up to
#: relu3_1 against relu5_1 (0.42 fp32, 0.48 bf16; this gives 0.45) and up to relu4_2 (0.81;
#: this gives 0.83). Multiply-adds alone would say 0.31 and 0.77
ACTIVATION_COST = 640


def _work_to(layer: str) -> float:
    """The cost per input pixel of the convolutions up to ``layer``, in multiply-adds."""
    work, cin, pixels = 0.0, 3, 1.0
    for name in LAYER_NAMES[: LAYER_INDEX[layer] + 1]:
        if name.startswith("conv"):
            cout = layer_channels(name)
            work += (9 * cin + ACTIVATION_COST) * cout * pixels
            cin = cout
        elif name.startswith("pool"):
            pixels /= 4
    return work


def network_share(layers) -> float:
    """The cost of a pass up to the deepest of ``layers``, as a share of a pass up to
    ``FULL_PASS_LAYER`` (relu3_1: 0.45): what a step of the plan costs per pixel against
    the default network's whole pass, for the run-time estimates."""
    if not layers:
        return 1.0
    return _work_to(last_needed_layer(layers)) / _work_to(FULL_PASS_LAYER)
