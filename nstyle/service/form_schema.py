"""The OpenAPI request bodies of the forms that submit jobs (a job's, a sheet's, a video's),
generated from the config's options like the CLI's flags, so that the schema (and a fuzzer
that reads it) knows every field the server takes."""

from __future__ import annotations

from typing import Any, Iterable, Optional

from nstyle.options.inputs import INPUT_FIELDS
from nstyle.service.settings import ServiceSettings
from nstyle.service.uploads import CONTENT_FIELD, MASK_FIELD, client_options

BINARY = {"type": "string", "format": "binary"}
#: JSON schema types of the options' Python types, by name
SCHEMA_TYPES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean"}


def job_files(settings: ServiceSettings) -> dict[str, Any]:
    """The file fields of a job's form, as schema properties."""
    props: dict[str, Any] = {
        CONTENT_FIELD: {**BINARY, "description": "the photo to repaint"},
        "style": {"type": "array", "items": BINARY, "minItems": 1, "maxItems": settings.max_styles,
                  "description": "one or more style images"},
    }
    for f in INPUT_FIELDS:
        if f.per_style:
            props[MASK_FIELD] = {"type": "array", "items": BINARY, "maxItems": settings.max_styles,
                                 "description": f.help + "; the text 'none' for a style without one"}
        else:
            props[f.name] = {**BINARY, "description": f.help}
    return props


def form_schema(settings: ServiceSettings, files: Optional[dict[str, Any]] = None,
                extra: Optional[dict[str, Any]] = None, leave_out: Iterable[str] = (),
                required: tuple[str, ...] = (CONTENT_FIELD, "style")) -> dict[str, Any]:
    """The OpenAPI request body of a job's form (or a sheet's, a video's: other ``files``,
    ``extra`` fields, options left out), generated from the config's options like the
    CLI's flags."""
    props = dict(job_files(settings) if files is None else files)
    for o in client_options():
        if o.name in leave_out:
            continue
        prop: dict[str, Any] = {"description": o.help}
        if o.is_list:
            prop["type"] = "string"
            prop["description"] += " (comma-separated)"
        else:
            prop["type"] = SCHEMA_TYPES.get(o.base_type.__name__, "string")
        if o.choices:
            prop["enum"] = list(o.choices)
        if o.default is not None:
            prop["default"] = ",".join(map(str, o.default)) if o.is_list else o.default
        props[o.name] = prop
    props.update(extra or {})
    return {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "required": list(required), "properties": props,
                   "additionalProperties": False}}}}  # an unknown field is refused (400)
