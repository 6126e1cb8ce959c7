"""nstyle: neural style transfer (Gatys, Ecker & Bethge) from the command line and Python."""

from nstyle.version import __version__  # noqa: E402,F401

from nstyle.api import prepare, run, stylize, stylize_video  # noqa: E402
from nstyle.options.config import Config  # noqa: E402
from nstyle.core.events import CancelToken, Progress, Result  # noqa: E402
from nstyle.core.stylizer import Stylizer
from nstyle.io.inputs import Inputs  # noqa: E402
from nstyle.tasks import explore  # noqa: E402  (nstyle.explore.units / activations / reconstructions)
from nstyle.tasks import video  # noqa: E402  (nstyle.video.stylize_frames, VideoStylizer; needs nstyle[video] to run)
from nstyle.tasks.sheet import contact_sheet  # noqa: E402
from nstyle.errors import (BadImage, BadOption, BadOutput, Cancelled, NStyleError,  # noqa: E402
                           OutOfMemory, RunFailed, TooLarge)

__all__ = ["stylize", "stylize_video", "run", "prepare", "contact_sheet", "explore", "video", "Inputs", "Config", "Stylizer", "Progress", "Result", "CancelToken",
           "NStyleError", "BadImage", "BadOption", "BadOutput", "RunFailed", "OutOfMemory",
           "Cancelled", "TooLarge", "__version__"]
