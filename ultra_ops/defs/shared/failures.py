"""Whatever leaves an op becomes a Failure whose text is redacted, with no exception chained to it.

Dagster stores an escaping exception as the step's error record, in the STEP_FAILURE and
RUN_FAILURE events the UI shows: its message, its traceback and, one by one, every exception of
its cause and context chain, each with its own message. An exception that is not ours (a bug, a
client library's error) carries text nobody redacted: httpx's "Illegal header value b'Bearer
sk-...\\r'" from a key with a CRLF ending. So every exception is turned into a Failure here: its
description and metadata redacted, the original's traceback (chain included) redacted into the
metadata for whoever debugs it, and raised `from None`, which keeps the original out of the record.
"""

from __future__ import annotations

import traceback
from typing import Any

from dagster import Failure, MarkdownMetadataValue, MetadataValue

from ultra_ops.engine.errors import UltraOpsError
from ultra_ops.engine.secrets import Redactor

# A traceback is for reading, not archiving: the innermost lines, where the bug is, are kept.
MAX_TRACEBACK = 20_000


def _redacted_metadata(metadata: dict[str, Any], redact: Redactor) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in metadata.items():
        raw = getattr(value, "value", value)
        if isinstance(value, MarkdownMetadataValue):
            clean[key] = MetadataValue.md(redact(raw))
        elif isinstance(raw, str):
            clean[key] = MetadataValue.text(redact(raw)) if raw is not value else redact(raw)
        elif isinstance(raw, (dict, list)):
            clean[key] = MetadataValue.json(redact.value(raw))
        else:
            clean[key] = value
    return clean


def redacted_failure(exc: Exception, redact: Redactor) -> Failure:
    """The Failure an op raises in place of `exc` (raise it `from None`)."""
    if isinstance(exc, Failure):
        return Failure(
            description=redact(exc.description or ""),
            metadata=_redacted_metadata(dict(exc.metadata), redact),
            allow_retries=exc.allow_retries,
        )
    if isinstance(exc, UltraOpsError):
        return Failure(description=redact(str(exc)), metadata={"error": type(exc).__name__}, allow_retries=False)
    # Not an error ultra_ops raises on purpose (a bug, most likely): the traceback goes along, redacted.
    trace = redact("".join(traceback.format_exception(exc)))[-MAX_TRACEBACK:]
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return Failure(
        description=f"{redact(text)} (unexpected: the traceback is in this failure's metadata)",
        metadata={"error": type(exc).__name__, "traceback": MetadataValue.text(trace)},
        allow_retries=False,
    )
