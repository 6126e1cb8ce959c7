"""The JSON shapes of the API, as pydantic models so that the OpenAPI schema documents them."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, Field


class InputInfo(BaseModel):
    key: str = Field(description="'content', 'style-1', 'style-2', ...")
    name: str = Field(description="the uploaded file's name")
    width: int
    height: int
    thumbnail: str = Field(description="URL of a PNG thumbnail (at most 256 px)")
    original: str = Field(description="URL of the upload, byte for byte")


class Inputs(BaseModel):
    content: InputInfo
    styles: list[InputInfo]


class ProgressInfo(BaseModel):
    iteration: int
    iterations: int
    percent: float
    elapsed: float = Field(description="seconds since the optimization started")
    eta: Optional[float] = Field(description="seconds left, extrapolated")
    losses: dict[str, float] = Field(description="each loss term's contribution, and 'total'")
    preview_iteration: int = Field(description="iteration of the latest preview image")


class JobLinks(BaseModel):
    self: str
    events: str
    cancel: str
    retry: str
    result: Optional[str] = None
    record: Optional[str] = None
    preview: Optional[str] = None


class JobView(BaseModel):
    id: str
    state: str = Field(description="queued, running, succeeded, failed, cancelled or interrupted")
    created: str = Field(description="ISO 8601, UTC")
    started: Optional[str] = None
    finished: Optional[str] = None
    queue_position: Optional[int] = Field(None, description="1 = next to start; queued jobs only")
    progress: Optional[ProgressInfo] = Field(None, description="running jobs only")
    options: dict[str, str] = Field(description="the options as submitted")
    config: dict[str, dict[str, Any]] = Field(description="the full configuration of the run")
    inputs: Inputs
    iterations: Optional[int] = Field(None, description="iterations run (finished jobs)")
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
    section: str
    type: str = Field(description="int, float or str")
    is_list: bool = Field(description="a comma-separated list of values")
    default: Any
    help: str
    choices: Optional[list[str]] = None


class Limits(BaseModel):
    max_upload_bytes: int
    max_pixels: int
    max_styles: int
    max_queue: int
    max_size: int
    formats: list[str]


class ServerInfo(BaseModel):
    version: str
    workers: int
    token_required: bool
    limits: Limits
    options: list[OptionView]
