"""The user-facing exception hierarchy.

Every error a user can cause (a bad image, a bad option, a run that cannot fit in memory)
is an ``NStyleError`` whose message says what was wrong and what to do about it. Only the
entry points (the CLI, the service) turn these into exit codes or HTTP statuses; library
code raises and never prints or exits.
"""

from __future__ import annotations


class NStyleError(Exception):
    """Base class of every error nstyle reports to a user."""

    #: process exit code the CLI uses for this kind of error
    exit_code = 2
    #: HTTP status the service uses for this kind of error
    http_status = 400


class BadOption(NStyleError, ValueError):
    """An option has an invalid value (unknown layer, negative weight, ...)."""


class BadImage(NStyleError, ValueError):
    """An input image is missing, unreadable, truncated, too large or not an image."""


class BadOutput(NStyleError, ValueError):
    """The output path cannot be written (missing folder, unsupported extension, ...)."""


class RunFailed(NStyleError, RuntimeError):
    """The optimization itself failed (the loss diverged to NaN/inf, ...)."""

    exit_code = 1
    http_status = 500
    #: (iteration, RGB image tensor) of the last finite iterate, when there was one
    last_good = None


class OutOfMemory(RunFailed):
    """The run needs more memory than the device has."""

    http_status = 507


class Cancelled(NStyleError):
    """The run was cancelled before it finished."""

    exit_code = 130
    http_status = 409


class TooLarge(BadOption):
    """The run is estimated to need more memory than it may use; refused before it starts."""

    http_status = 413
