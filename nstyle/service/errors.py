"""The service's own user errors, in nstyle's one hierarchy (each carries its HTTP status).

The engine's errors (``BadImage``, ``BadOption``, ...) already say what was wrong; these add
the cases only a server has: limits, unknown jobs, actions that do not fit a job's state.
"""

from __future__ import annotations

from nstyle.errors import BadImage, NStyleError


class OverLimit(BadImage):
    """An upload, an image or a request is over a limit of this server (not to be confused
    with ``nstyle.errors.TooLarge``: a run that cannot fit in memory)."""

    http_status = 413


class UnsupportedFormat(BadImage):
    """An upload is an image, but of a format this server does not take."""

    http_status = 415


class QueueFull(NStyleError):
    """The queue holds as many jobs as this server allows; try again later."""

    http_status = 429


class Busy(NStyleError):
    """The server is at its limit of work of this kind at once; try again in a moment."""

    http_status = 503


class NotFound(NStyleError):
    http_status = 404


class Conflict(NStyleError):
    """The job is not in a state where this makes sense (a result of a running job, ...)."""

    http_status = 409


class Unauthorized(NStyleError):
    http_status = 401
