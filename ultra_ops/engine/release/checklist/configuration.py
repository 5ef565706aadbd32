"""The checklist's configuration items: environment variables, migrations, LLM keys, feature flags."""

from __future__ import annotations

import os
from typing import Any

from ultra_ops.engine.envfile import read_env_file
from ultra_ops.engine.release.checklist.report import (
    CONFIG,
    ChecklistItem,
    checked,
    http_client,
    httpx,
)
from ultra_ops.engine.secrets import Redactor
from ultra_ops.engine.settings import Environment
from ultra_ops.engine.versions import VERSION_KEY

# Configuration ----------------------------------------------------------------------------------


def env_file_items(env: Environment) -> list[ChecklistItem]:
    path = env.env_file
    if not path.exists():
        return [
            checked(
                CONFIG,
                "environment variables set",
                False,
                f"{path} does not exist (ultra-ops init --environment {env.name} creates it)",
            )
        ]
    values = read_env_file(path)
    # The version is written by the deploy itself, so a first deploy must not need it.
    wanted = [k for k in env.required_env_keys if k != VERSION_KEY]
    missing = [k for k in wanted if not values.get(k)]
    # Not the optional ones: a password that switches authentication on, a smoke step's guarded secret.
    missing_env = [n for n in env.required_secret_env_names() if not os.environ.get(n)]
    evidence = (
        f"missing in {path.name}: {', '.join(missing)}"
        if missing
        else f"{path.name}: {', '.join(wanted)} set"
        if wanted
        else f"{path.name}: no key required besides {VERSION_KEY} (the deploy writes it)"
    )
    evidence += (
        f"; not set in ultra_ops's environment: {', '.join(missing_env)}"
        if missing_env
        else f"; {len(env.required_secret_env_names())} secret variables named by the config set"
    )
    return [checked(CONFIG, "environment variables set", not missing and not missing_env, evidence)]


def migrations_item(env: Environment, redact: Redactor) -> ChecklistItem:
    from ultra_ops.engine.release.migrate import pending_migrations

    name = "database migrations prepared"
    if env.migrations_dir is None:
        return checked(CONFIG, name, True, "no migrations folder configured")
    try:
        pending = pending_migrations(env)
    except Exception as exc:  # noqa: BLE001 - a bad file name or an unreachable database: both block
        return checked(CONFIG, name, False, redact(str(exc)))
    return checked(CONFIG, name, True, f"{len(pending)} pending" + (": " + ", ".join(pending) if pending else ""))


def _quota(headers: Any) -> dict[str, str]:
    return {
        k.lower().removeprefix("x-ratelimit-remaining-"): v
        for k, v in headers.items()
        if k.lower().startswith("x-ratelimit-remaining-")
    }


def llm_item(env: Environment, redact: Redactor) -> ChecklistItem:
    from ultra_ops.engine.verify.checks import ANTHROPIC_VERSION

    name = "LLM provider keys valid, with quota"
    if not env.llm_providers:
        return checked(CONFIG, name, True, "no LLM provider configured")
    found, failed, low = [], [], []
    with http_client(env) as client:
        for p in env.llm_providers:
            if p.auth == "none":
                # A keyless provider (the environment's own LLM stand-in, which the deploy starts
                # later): no key to check and no quota to spend.
                found.append(f"{p.name}: keyless (auth = none), nothing to check")
                continue
            key = os.environ.get(p.api_key_env)
            if not key:
                failed.append(f"{p.name}: {p.api_key_env} is not set")
                continue
            headers = (
                {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
                if p.auth == "x-api-key"
                else {"Authorization": f"Bearer {key}"}
            )
            try:
                try:
                    response = client.get(p.models_url, headers=headers)
                except httpx.RemoteProtocolError:
                    # The server closed the connection without an answer (a connection it had
                    # dropped): asked once more on a new one before it counts as the answer.
                    response = client.get(p.models_url, headers=headers)
            except httpx.HTTPError as exc:
                failed.append(f"{p.name}: {type(exc).__name__}")
                continue
            if response.status_code != 200:
                failed.append(
                    f"{p.name}: key rejected ({response.status_code})"
                    if response.status_code in (401, 403)
                    else f"{p.name}: answered {response.status_code}"
                )
                continue
            quota = _quota(response.headers)
            if not quota:
                found.append(f"{p.name}: key accepted, quota not reported")
                continue
            shown = ", ".join(f"{k} {v} remaining" for k, v in sorted(quota.items()))
            requests = quota.get("requests", "")
            if requests.isdigit() and int(requests) == 0:
                failed.append(f"{p.name}: quota exhausted ({shown})")
            elif requests.isdigit() and int(requests) < env.checklist.min_llm_requests_remaining:
                low.append(f"{p.name}: {shown} (below {env.checklist.min_llm_requests_remaining})")
            else:
                found.append(f"{p.name}: key accepted, {shown}")
    evidence = redact("; ".join(failed + low + found))
    if failed:
        return checked(CONFIG, name, False, evidence)
    return checked(CONFIG, name, not low, evidence, warn=True)


def feature_flags_item(env: Environment) -> ChecklistItem:
    name = "feature flags set"
    flags = env.checklist.feature_flags
    if not flags:
        return checked(CONFIG, name, True, "no feature flags named in the config")
    values = read_env_file(env.env_file)
    unset = [f for f in flags if not values.get(f)]
    if unset:
        return checked(CONFIG, name, False, f"not set in {env.env_file.name}: {', '.join(unset)}")
    # Flags are configuration, not secrets: their values are evidence.
    return checked(CONFIG, name, True, ", ".join(f"{f}={values[f]}" for f in flags))
