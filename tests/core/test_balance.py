"""The content/style/tv balance does not depend on the output size (``balance_size``)."""

import pytest

from nstyle.core.objective import Balance, balance
from nstyle.errors import BadOption
from nstyle.options.config import LossOptions


def test_the_reference_size_keeps_512_px_runs_as_they_were():
    # a 512 x 384 output: the 256 px scale weighs content and tv 4x, the 512 px scale 1x, as before
    assert balance((384, 512), (192, 256), 512) == Balance(4.0, 4.0)
    assert balance((384, 512), (384, 512), 512) == Balance(1.0, 1.0)
    # a 128 x 96 output (16x fewer positions): content 16 ** 2, tv 16
    assert balance((96, 128), (96, 128), 512) == Balance(256.0, 16.0)
    assert balance((96, 128), (48, 64), 512) == Balance(1024.0, 64.0)
    # below 128 px the boost stays at 128 px's (16 ** 2), the positions rule goes on within the run
    assert balance((24, 32), (24, 32), 512) == Balance(256.0, 16.0)
    assert balance((24, 32), (12, 16), 512) == Balance(1024.0, 64.0)
    # above the reference: as before
    assert balance((768, 1024), (384, 512), 512) == Balance(4.0, 4.0)
    # 0: the old rule, the weights as given at every output size
    assert balance((96, 128), (96, 128), 0) == Balance(1.0, 1.0)


@pytest.mark.parametrize("bad", [-1, 16, 10_000, 1.5, True])
def test_balance_size_is_checked(bad):
    with pytest.raises(BadOption, match="balance_size"):
        LossOptions(balance_size=bad)
