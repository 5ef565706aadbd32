"""Keeping secrets out of logs, run metadata and error messages.

Every message the engine reports passes through a Redactor built from the environment's secret
variables (named in the config) and the secret-looking keys of its env file.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from ultra_ops.engine.envfile import read_env_file

__all__ = ["MASK", "Log", "NullLog", "Redactor", "RedactingLog", "SecretHolder"]

MASK = "***"
_SECRET_KEY = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|APIKEY|PRIVATE|CREDENTIAL|_KEY$)", re.I)
# Shorter values would mask ordinary words and numbers in every message.
_MIN_SECRET_LENGTH = 4


def secret_forms(secret: str) -> set[str]:
    """The forms a secret takes in messages: as it is; stripped of surrounding whitespace, CR and LF
    (a CRLF env file, a shell `export` with a trailing blank); escaped as Python's repr, a bytes repr
    (httpx's "Illegal header value b'...\\r'") or JSON do, once or twice; URL-encoded (in a URL or a
    form body)."""
    forms: set[str] = set()
    for value in {secret, secret.strip(), secret.strip("\r\n")}:
        forms.add(value)
        forms.add(repr(value)[1:-1])
        forms.add(json.dumps(value)[1:-1])
        forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
        forms.add(repr(value.encode("utf-8", "surrogateescape"))[2:-1])
        forms.add(urllib.parse.quote(value, safe=""))
        forms.add(urllib.parse.quote(value))
        forms.add(urllib.parse.quote_plus(value))
    # Escaped once more: an exception whose text quotes another's repr (KeyError's text is the repr
    # of its message), or JSON holding a repr.
    forms |= {repr(f)[1:-1] for f in forms} | {json.dumps(f)[1:-1] for f in forms}
    return forms


class SecretHolder(Protocol):
    """What names an environment's secrets (an Environment of the settings): the variables that hold
    them, and the env file whose secret-looking keys are secrets too."""

    @property
    def env_file(self) -> Path: ...

    def secret_env_names(self) -> list[str]: ...


class Redactor:
    """Replaces every known secret value, in each form it takes in messages, in text with ***."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for s in secrets:
            if s:
                forms |= secret_forms(s)
        self._secrets = sorted((f for f in forms if len(f) >= _MIN_SECRET_LENGTH), key=len, reverse=True)

    @classmethod
    def for_environment(cls, env: SecretHolder) -> Redactor:
        values = [os.environ.get(name, "") for name in env.secret_env_names()]
        values += [v for k, v in read_env_file(env.env_file).items() if _SECRET_KEY.search(k)]
        return cls(values)

    @classmethod
    def for_process(cls) -> Redactor:
        """The values of this process's secret-looking environment variables: what an error may carry
        where no environment's redactor is at hand (or a variable its config does not name)."""
        return cls(v for k, v in os.environ.items() if _SECRET_KEY.search(k))

    def __or__(self, other: Redactor) -> Redactor:
        both = Redactor()
        both._secrets = sorted(set(self._secrets) | set(other._secrets), key=len, reverse=True)
        return both

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def value(self, obj: Any) -> Any:
        """Redact strings inside nested dicts and lists (run metadata, JSON output)."""
        if isinstance(obj, str):
            return self(obj)
        if isinstance(obj, dict):
            return {k: self.value(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.value(v) for v in obj)
        return obj


class Log(Protocol):
    """What the engine reports progress to: a logging.Logger or Dagster's context.log."""

    def info(self, msg: str) -> Any: ...

    def warning(self, msg: str) -> Any: ...


class RedactingLog:
    """Wraps a Log so that nothing it passes on carries a secret."""

    def __init__(self, inner: Log, redactor: Redactor) -> None:
        self.inner, self.redact = inner, redactor

    def info(self, msg: str) -> None:
        self.inner.info(self.redact(msg))

    def warning(self, msg: str) -> None:
        self.inner.warning(self.redact(msg))


class NullLog:
    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        pass
