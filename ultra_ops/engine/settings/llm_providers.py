"""The LLM providers verification calls: `[[environments.X.llm_providers]]`.

[[environments.production.llm_providers]]
name = "openai"
models_url = "https://api.openai.com/v1/models"
api_key_env = "OPENAI_API_KEY"             # the variable that holds the key
completion_url = "https://api.openai.com/v1/chat/completions"   # performance verification's one completion
model = "gpt-4o-mini"
completion_budget_ms = 2000
"""

from __future__ import annotations

from dataclasses import dataclass

from ultra_ops.engine.settings.table import TableReader


@dataclass(frozen=True)
class LlmProvider:
    """An LLM provider whose model listing verification calls with the key from the environment."""

    name: str
    models_url: str
    api_key_env: str | None
    auth: str = "bearer"  # "bearer" (OpenAI style), "x-api-key" (Anthropic style) or "none" (a local stand-in)
    completion_url: str | None = None  # where performance verification may spend one small completion
    model: str | None = None
    completion_budget_ms: float | None = None


def read_llm_providers(r: TableReader) -> tuple[LlmProvider, ...]:
    """The `llm_providers` list of the environment's table `r`."""
    providers = []
    for p in r.tables("llm_providers"):
        auth = p.get("auth", str, "bearer")
        if auth not in ("bearer", "x-api-key", "none"):
            raise p.fail("auth", f"expected 'bearer', 'x-api-key' or 'none', got {auth!r}")
        key_env = p.env_var_name("api_key_env")
        if key_env is None and auth != "none":
            raise p.fail("api_key_env", "is required")
        budget = p.budget("completion_budget_ms", at_most=600_000, unit=" ms")
        providers.append(
            LlmProvider(
                name=p.get("name", str, required=True),
                models_url=p.url("models_url"),
                api_key_env=key_env,
                auth=auth,
                completion_url=p.url("completion_url", required=False),
                model=p.get("model", str, None),
                completion_budget_ms=budget,
            )
        )
        p.finish()
    return tuple(providers)
