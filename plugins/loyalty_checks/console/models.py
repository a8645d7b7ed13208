"""Validation of what the console receives: every bad value is a 400 naming its field.

`SilenceRequest` is the body of POST /loyalty/api/silences and of the silences form. An
`author` in the body is ignored: the author is the signed-in user (app.py). `Time` is
every time the console takes (body or query): ISO 8601 with a zone, never a number,
between 1970 and 9998 (a year added to either end still fits in a datetime). The text
rules of a silence (no control characters, lengths) are loyalty_checks.silences', which
the loyalty_silences DAG and the CLI apply too.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, WithJsonSchema, field_validator

from loyalty_checks import silences
from loyalty_checks.catalog import DURATION, CatalogError, catalog, parse_duration

MAX_SILENCE = dt.timedelta(days=366)
MAX_BODY = 64 * 1024  # bytes of a JSON body: a silence is well under 2 KiB
MAX_TEXT = silences.MAX_REASON
MAX_ENTITY_ID = silences.MAX_ENTITY_ID
TIME_EXAMPLE = "2026-11-24T18:00Z"
_NUMBER = re.compile(r"^[+-]?\d+(\.\d*)?([eE][+-]?\d+)?$")


def parse_time(value: Any) -> dt.datetime:
    """An ISO 8601 time with a zone, in UTC and within silences.EARLIEST..LATEST, or ValueError."""
    expected = f"expected an ISO 8601 time with a zone, e.g. {TIME_EXAMPLE}"
    if isinstance(value, dt.datetime):
        t = value
    elif isinstance(value, str) and not _NUMBER.match(value.strip()):
        if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
            raise ValueError(f"{expected}; got control characters")
        try:
            t = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{expected}, got {value[:40]!r}") from None
    else:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            raise ValueError(f"{expected}, got a number (epoch seconds are not taken)")
        raise ValueError(f"{expected}, got {type(value).__name__}")
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{expected} (Z or +hh:mm), got one without a zone")
    try:
        return silences.check_time(t, "time")
    except silences.SilenceError as exc:
        raise ValueError(exc.message) from None


Time = Annotated[dt.datetime, PlainValidator(parse_time),
                 WithJsonSchema({"type": "string", "format": "date-time", "examples": [TIME_EXAMPLE]})]


class FieldError(ValueError):
    """A request value is invalid: answered 400 with the field's name."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class SilenceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    check_id: str = Field(max_length=63)
    entity_id: str | None = Field(default=None, max_length=MAX_ENTITY_ID,
                                  description="one entity only (store, merchant, provider id); none: the whole check")
    duration: str | None = Field(default=None, description="how long from starts_at: 30m, 4h, 2d, 1w (or until)")
    until: Time | None = Field(default=None, description="the end, ISO 8601 with a zone (or duration)")
    starts_at: Time | None = Field(default=None, description="a later start, ISO 8601 with a zone; default now")
    reason: str = Field(min_length=1, max_length=MAX_TEXT, description="shown in every message while it lasts")

    @field_validator("entity_id", mode="before")
    @classmethod
    def _entity_text(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("expected a string or an integer")
        if isinstance(v, int):
            return str(v)
        return v or None

    @field_validator("entity_id")
    @classmethod
    def _entity_characters(cls, v: str | None) -> str | None:
        try:
            return silences.check_entity_id(v)
        except silences.SilenceError as exc:
            raise ValueError(exc.message) from None

    @field_validator("reason")
    @classmethod
    def _reason_characters(cls, v: str) -> str:
        try:
            return silences.check_reason(v)
        except silences.SilenceError as exc:
            raise ValueError(exc.message) from None

    @field_validator("duration", mode="before")
    @classmethod
    def _empty_duration(cls, v: Any) -> Any:
        return v or None

    @field_validator("until", "starts_at", mode="before")
    @classmethod
    def _empty_time(cls, v: Any) -> Any:
        return None if v is None or (isinstance(v, str) and not v.strip()) else v

    @field_validator("check_id")
    @classmethod
    def _known_check(cls, v: str) -> str:
        ids = [c.id for c in catalog().checks]
        if v not in ids:
            raise ValueError(f"unknown check {v!r} (known: {', '.join(ids)})")
        return v

    @field_validator("duration")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not DURATION.match(v):
            raise ValueError(f"expected a duration like 30m, 4h, 2d, 1w, got {v!r}")
        try:
            length = parse_duration(v, "duration")
        except (CatalogError, OverflowError):
            raise ValueError(f"expected a duration like 30m, 4h, 2d, 1w, got {v!r}") from None
        if not dt.timedelta(0) < length <= MAX_SILENCE:
            raise ValueError("must be more than 0 and at most 366 days")
        return v

    def checked(self, now: dt.datetime) -> SilenceRequest:
        """Cross-field rules: a duration or an end (not both), an end after the start and in
        the future (a silence that is over already silences nothing), at most 366 days."""
        if (self.duration is None) == (self.until is None):
            raise FieldError("duration", "give either a duration (e.g. 2h) or an end time (until), not both")
        start = self.starts_at or now
        if self.starts_at is not None and self.starts_at > now + MAX_SILENCE:
            raise FieldError("starts_at", "must be within 366 days from now")
        if self.until is not None:
            if self.until <= max(start, now):
                raise FieldError("until", "must be in the future and after starts_at")
            if self.until - start > MAX_SILENCE:
                raise FieldError("until", "a silence lasts at most 366 days")
        else:
            ends = start + parse_duration(self.duration, "duration")
            if ends <= now:
                raise FieldError("ends_at", f"starts_at + duration = {ends.isoformat()} is already past: "
                                            "a silence must end in the future")
        return self


def field_of(loc: tuple) -> str:
    """The field named by a pydantic / FastAPI error location: ('body', 'check_id') -> 'check_id'."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "form")]
    return ".".join(parts) or (str(loc[0]) if loc else "body")


def first_error(errors: list[dict[str, Any]]) -> FieldError:
    """A FieldError for the first of pydantic's errors, its message without the 'Value error, ' prefix."""
    err = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if err.get("type") == "missing":
        msg = "is required"
    elif err.get("type") == "json_invalid":
        return FieldError("body", "not valid JSON")
    return FieldError(field_of(tuple(err.get("loc") or ())), msg)


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object (at most MAX_BODY bytes, read by the caller)."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise FieldError("body", "JSON nested too deeply") from None
    except ValueError:  # also bad UTF-8
        raise FieldError("body", "not valid JSON") from None
    if not isinstance(data, dict):
        raise FieldError("body", "expected a JSON object")
    return data


def parse_silence(data: dict[str, Any], now: dt.datetime) -> SilenceRequest:
    """Validate a silence request (form or JSON) or raise FieldError."""
    try:
        return SilenceRequest.model_validate(data).checked(now)
    except ValidationError as exc:
        raise first_error(exc.errors()) from None


def naive_as_utc(text: str | None) -> str | None:
    """The form's time fields: an ISO time without a zone is UTC (the form says so)."""
    if not text or not text.strip():
        return None
    text = text.strip()
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text  # left to the model, which names the field
    return (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).isoformat()


# ---------------------------------------------------------------- what the API answers (for its OpenAPI document)

class Error(BaseModel):
    """Every error of the API: what is wrong and, for a 400, the field (or `body`) to blame."""
    detail: str = Field(examples=["until: must be in the future and after starts_at"])
    field: str | None = Field(default=None, examples=["until"])


class Notification(BaseModel):
    event: str
    t: str
    channels: list[str]


class Alert(BaseModel):
    check_id: str
    severity: str
    title: str
    entity_id: str | None
    entity_name: str | None
    state: str
    since: str | None
    value: float | None
    threshold: float | None
    silenced: bool
    acknowledged_by: str | None = Field(default=None, description="who acknowledged the check's firing episode")
    acknowledged_at: str | None = None
    runbook_url: str
    run_path: str | None = None
    last_notification: Notification | None


class Alerts(BaseModel):
    """One page of the alerts (GET /api/alerts?limit=&offset=)."""
    alerts: list[Alert]
    total: int = Field(description="alerts on all pages")
    offset: int = Field(description="alerts of the ranking before this page")
    limit: int = Field(description="alerts per page (100 by default, at most 1000)")
    next: str | None = Field(description="URL of the next page; null on the last page")


class CheckSummary(BaseModel):
    check_id: str
    severity: str
    title: str
    status: str | None
    last_t: str | None
    value: float | None
    threshold: float | None
    error: str | None


class Checks(BaseModel):
    checks: list[CheckSummary]


class Evaluation(BaseModel):
    t: str
    status: str
    value: float | None
    alert_status: str | None
    silenced: bool | None = None


class Silence(BaseModel):
    id: int
    check_id: str
    entity_id: str | None
    starts_at: str
    ends_at: str
    author: str
    reason: str


class Action(BaseModel):
    t: str
    action: str = Field(examples=["ack", "silence_4h"])
    actor: str = Field(examples=["slack:U0123ABCD", "admin"])
    source: str = Field(examples=["slack", "console"])


class History(BaseModel):
    check_id: str
    since: str
    until: str | None
    truncated: bool
    evaluations: list[Evaluation]
    notifications: list[Notification]
    silences: list[Silence]
    actions: list[Action]


class Acknowledged(BaseModel):
    """POST /api/alerts/<check id>/ack."""
    check_id: str
    result: str = Field(description="applied, or 'already acknowledged' (by acknowledged_by)")
    acknowledged_by: str | None
    acknowledged_at: str | None


class Silences(BaseModel):
    silences: list[Silence]
