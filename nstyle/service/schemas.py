"""The JSON shapes of the API, as pydantic models so that the OpenAPI schema documents them."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, Field


class InputInfo(BaseModel):
    key: str = Field(description="'content', 'style-1', 'style-mask-1', 'keep-mask', "
                     "'init-image', 'fine-style', 'coarse-style'")
    name: str = Field(description="the uploaded file's name")
    width: int
    height: int
    thumbnail: str = Field(description="URL of a PNG thumbnail (at most 256 px)")
    original: str = Field(description="URL of the upload, byte for byte")


class Inputs(BaseModel):
    content: InputInfo
    styles: list[InputInfo]
    style_masks: Optional[list[Optional[InputInfo]]] = Field(
        None, description="one per style (null: that style has no mask); absent: no masks")
    keep_mask: Optional[InputInfo] = None
    init_image: Optional[InputInfo] = None
    fine_style: Optional[InputInfo] = None
    coarse_style: Optional[InputInfo] = None
    clip: Optional[InputInfo] = Field(None, description="a video job's clip (its first frame is "
                                      "the content)")


class ProgressInfo(BaseModel):
    iteration: int = Field(description="counted over the whole run: every scale in turn")
    iterations: int = Field(description="the run's planned total (the sum over its scales)")
    percent: float
    elapsed: float = Field(description="seconds since the optimization started")
    eta: Optional[float] = Field(description="seconds left, extrapolated")
    losses: dict[str, float] = Field(description="each loss term's contribution, and 'total'")
    preview_iteration: int = Field(description="iteration of the latest preview image")
    scale: int = Field(1, description="which size of the coarse-to-fine schedule (1-based)")
    scales: int = Field(1, description="of how many")
    phase: str = Field("stylize", description="stylize, or mix (making the mixed style image)")


class JobLinks(BaseModel):
    self: str
    events: str
    cancel: str
    retry: str
    result: Optional[str] = None
    record: Optional[str] = None
    bundle: Optional[str] = Field(None, description="a zip of the result, its record and the inputs")
    preview: Optional[str] = None


class JobView(BaseModel):
    id: str
    state: str = Field(description="queued, running, succeeded, failed, cancelled or interrupted")
    kind: str = Field(description="image (POST /api/jobs), sheet (POST /api/sheets) or video (POST /api/videos)")
    created: str = Field(description="ISO 8601, UTC")
    started: Optional[str] = None
    finished: Optional[str] = None
    queue_position: Optional[int] = Field(None, description="1 = next to start; queued jobs only")
    progress: Optional[ProgressInfo] = Field(None, description="running jobs only")
    options: dict[str, str] = Field(description="the options as submitted")
    config: dict[str, dict[str, Any]] = Field(description="the full configuration of the run")
    inputs: Inputs
    iterations: Optional[int] = Field(None, description="iterations run (finished jobs)")
    iterations_total: Optional[int] = Field(None, description="iterations planned (finished jobs)")
    losses: Optional[dict[str, float]] = Field(None, description="final losses (succeeded jobs)")
    output_size: Optional[list[int]] = Field(None, description="[width, height] of the result")
    error: Optional[str] = Field(None, description="why it failed, was cancelled or interrupted")
    links: JobLinks


class JobList(BaseModel):
    jobs: list[JobView]
    total: int
    queued: int
    running: int


class OptionView(BaseModel):
    name: str
    label: str = Field(description="what the page calls it")
    section: str
    section_label: str
    type: str = Field(description="int, float or str")
    is_list: bool = Field(description="a comma-separated list of values")
    default: Any
    default_text: Optional[str] = Field(None, description="what an empty field means")
    help: str
    choices: Optional[list[str]] = None


class InputFieldView(BaseModel):
    name: str = Field(description="the upload field")
    label: str
    help: str
    mask: bool = Field(description="a grayscale mask: white selects")
    per_style: bool = Field(description="one per style image, in order ('none' for a style without)")


class Limits(BaseModel):
    max_upload_bytes: int
    max_pixels: int
    max_request_pixels: int
    max_styles: int
    max_queue: int
    max_size: int
    max_iterations: int
    max_megapixel_iterations: float
    max_field_chars: int
    formats: list[str]
    video: dict[str, float] = Field(default_factory=dict, description="video jobs: max_upload_bytes, "
                                    "max_seconds, max_frames, max_pixels, max_size, max_iterations")


class VideoOptionView(BaseModel):
    name: str
    type: str = Field(description="int, float, str or bool")
    default: Any
    help: str
    choices: Optional[list[str]] = None


class ServerInfo(BaseModel):
    version: str
    workers: int
    token_required: bool
    limits: Limits
    options: list[OptionView]
    inputs: list[InputFieldView] = Field(description="the image inputs besides content and style")
    video_options: list[VideoOptionView] = Field(default_factory=list, description="the options "
                                                 "of POST /api/videos besides the job options")
