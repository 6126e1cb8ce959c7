import os

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Decoded weights go to a temporary cache, not the user's."""
    old = os.environ.get("NSTYLE_CACHE_DIR")
    os.environ["NSTYLE_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("NSTYLE_CACHE_DIR", None)
    else:
        os.environ["NSTYLE_CACHE_DIR"] = old


def _small(array: np.ndarray, size: int) -> Image.Image:
    img = Image.fromarray(array).convert("RGB")
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    return img


@pytest.fixture(scope="session")
def content_img() -> Image.Image:
    """A real photo (scikit-image's cat), 64 px on its longest side."""
    from skimage import data

    return _small(data.chelsea(), 64)


@pytest.fixture(scope="session")
def style_img() -> Image.Image:
    """A real picture with strong texture (Hubble deep field), 64 px."""
    from skimage import data

    return _small(data.hubble_deep_field(), 64)


@pytest.fixture(scope="session")
def style_img2() -> Image.Image:
    from skimage import data

    return _small(data.coffee(), 64)


@pytest.fixture
def content_path(tmp_path, content_img):
    p = tmp_path / "content.png"
    content_img.save(p)
    return p


@pytest.fixture
def style_path(tmp_path, style_img):
    p = tmp_path / "style.png"
    style_img.save(p)
    return p


def to_t(img: Image.Image) -> torch.Tensor:
    from nstyle.io.images import to_tensor

    return to_tensor(img)
