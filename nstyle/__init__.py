"""nstyle: neural style transfer (Gatys, Ecker & Bethge) from the command line and Python."""

# before anything imports torch (every nstyle module that needs it loads this file first):
# how its OpenMP threads wait, see nstyle.openmp
from nstyle.openmp import prefer_passive_wait

prefer_passive_wait()

from nstyle.version import __version__  # noqa: E402,F401

#: the public names, by the module that defines them. They are imported on first use
#: (PEP 562), so that ``nstyle --help``, a bad flag or ``import nstyle.options`` do not pay
#: for PyTorch (seconds) before they need it.
_PUBLIC = {
    "stylize": "nstyle.api", "stylize_video": "nstyle.api", "run": "nstyle.api", "prepare": "nstyle.api",
    "Config": "nstyle.options.config",
    "CancelToken": "nstyle.core.events", "Progress": "nstyle.core.events", "Result": "nstyle.core.events",
    "Stylizer": "nstyle.core.stylizer",
    "Inputs": "nstyle.io.inputs",
    "contact_sheet": "nstyle.tasks.sheet",
    "NStyleError": "nstyle.errors", "BadImage": "nstyle.errors", "BadOption": "nstyle.errors",
    "BadOutput": "nstyle.errors", "Cancelled": "nstyle.errors", "RunFailed": "nstyle.errors",
    "OutOfMemory": "nstyle.errors", "TooLarge": "nstyle.errors",
}
#: modules offered as attributes: nstyle.explore (units, activations, reconstructions) and
#: nstyle.video (stylize_frames, VideoStylizer; needs nstyle[video] to run)
_MODULES = {"explore": "nstyle.tasks.explore", "video": "nstyle.tasks.video"}

__all__ = [*_PUBLIC, *_MODULES, "__version__"]


def __getattr__(name: str):
    import importlib

    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    else:
        raise AttributeError(f"module 'nstyle' has no attribute {name!r}")
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
