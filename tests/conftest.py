import os

import pytest
from PIL import Image

from tests.support.tensors import small_picture


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


@pytest.fixture(scope="session")
def content_img() -> Image.Image:
    """A real photo (scikit-image's cat), 64 px on its longest side."""
    from skimage import data

    return small_picture(data.chelsea(), 64)


@pytest.fixture(scope="session")
def style_img() -> Image.Image:
    """A real picture with strong texture (Hubble deep field), 64 px."""
    from skimage import data

    return small_picture(data.hubble_deep_field(), 64)


@pytest.fixture(scope="session")
def style_img2() -> Image.Image:
    from skimage import data

    return small_picture(data.coffee(), 64)


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
