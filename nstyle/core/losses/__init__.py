"""The losses: the style losses behind one interface (``StyleLoss``, one module each) and
their registry, plus the other terms (``terms``: content, total variation, temporal).

    from nstyle.core import losses
    loss = losses.get("gram")        # the StyleLoss of ``--style-loss gram``

To add a style loss: write one module here with a ``StyleLoss`` subclass and its instance,
add the instance to ``REGISTRY`` below and its name to the option's choices
(``nstyle.options.config.STYLE_LOSSES``); docs/architecture.md has the recipe. Nothing else
in nstyle names a loss.
"""

from __future__ import annotations

from nstyle.core.losses.base import LayerTerm, StyleLoss
from nstyle.core.losses.gram import GRAM
from nstyle.core.losses.meancov import MEANCOV
from nstyle.core.losses.neighbors import NEIGHBORS
from nstyle.errors import BadOption

#: every style loss, by its ``--style-loss`` name
REGISTRY: dict[str, StyleLoss] = {loss.name: loss for loss in (GRAM, MEANCOV, NEIGHBORS)}

__all__ = ["GRAM", "LayerTerm", "REGISTRY", "StyleLoss", "get"]


def get(name: str) -> StyleLoss:
    """The style loss named ``name`` (raises ``BadOption`` for an unknown one)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise BadOption(f"style_loss must be one of {', '.join(REGISTRY)}, got {name!r}") from None
