"""Validation of what the console receives: every bad value is a 400 naming its field.

`SilenceRequest` is the body of POST /loyalty/api/silences and of the silences form. An
`author` in the body is ignored: the author is the signed-in user (app.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from loyalty_checks.catalog import DURATION, CatalogError, catalog, parse_duration

MAX_SILENCE = dt.timedelta(days=366)
MAX_TEXT = 1000
MAX_ENTITY_ID = 200


class FieldError(ValueError):
    """A request value is invalid: answered 400 with the field's name."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class SilenceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    check_id: str = Field(max_length=63)
    entity_id: str | None = Field(default=None, max_length=MAX_ENTITY_ID)
    duration: str | None = None
    until: AwareDatetime | None = None
    starts_at: AwareDatetime | None = None
    reason: str = Field(min_length=1, max_length=MAX_TEXT)

    @field_validator("entity_id", mode="before")
    @classmethod
    def _entity_text(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("expected a string or an integer")
        if isinstance(v, int):
            return str(v)
        return v or None

    @field_validator("duration", mode="before")
    @classmethod
    def _empty_duration(cls, v: Any) -> Any:
        return v or None

    @field_validator("until", "starts_at", mode="before")
    @classmethod
    def _empty_time(cls, v: Any) -> Any:
        return v or None

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
        """Cross-field rules: a duration or an end (not both), an end after the start, at most 366 days."""
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
