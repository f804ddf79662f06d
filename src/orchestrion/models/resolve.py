"""`resolve_model("openai:gpt-4o-mini")`: a Model from a spec string plus the environment.

Explicit keyword arguments win over environment variables, which win over defaults:
    openai:MODEL     OPENAI_API_KEY, OPENAI_BASE_URL   (any Chat Completions server)
    anthropic:MODEL  ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL
    scripted         the offline scripted model (`script=` to choose its replies)
Other keyword arguments go to the adapter's constructor (timeout, headers, name, ...).
"""

from __future__ import annotations

import os
from typing import Any

from orchestrion.errors import OrchestrionError
from orchestrion.models.base import Model


class ModelConfigError(OrchestrionError, ValueError):
    """A model spec cannot be turned into a model (unknown provider, missing key)."""


_PROVIDERS = {
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
}


def resolve_model(spec: str, **overrides: Any) -> Model:
    """Build the model a spec names. Raises ModelConfigError with the variable to set
    when a key is missing."""
    provider, sep, model = spec.strip().partition(":")
    provider = provider.lower()
    if provider == "scripted":
        from orchestrion.models.scripted import ScriptedModel
        from orchestrion.models.scripts import load_script

        script = overrides.pop("script", None)
        if script is None:
            script = load_script(model or "default")
        return ScriptedModel(script, **overrides)
    if provider not in _PROVIDERS:
        raise ModelConfigError(
            f"unknown model provider {provider!r} in {spec!r}: "
            "use openai:MODEL, anthropic:MODEL or scripted"
        )
    if not sep or not model:
        raise ModelConfigError(f"{spec!r} names no model: write {provider}:MODEL_NAME")
    key_var, url_var = _PROVIDERS[provider]
    api_key = overrides.pop("api_key", None) or os.environ.get(key_var) or None
    base_url = overrides.pop("base_url", None) or os.environ.get(url_var) or None
    if not api_key:
        raise ModelConfigError(
            f"{key_var} is not set: export {key_var}=... or pass api_key= "
            "(local servers that ignore the key accept any non-empty value)"
        )
    if provider == "openai":
        from orchestrion.models.openai import DEFAULT_OPENAI_BASE_URL, OpenAIModel

        return OpenAIModel(
            model, api_key=api_key, base_url=base_url or DEFAULT_OPENAI_BASE_URL, **overrides
        )
    from orchestrion.models.anthropic import DEFAULT_ANTHROPIC_BASE_URL, AnthropicModel

    return AnthropicModel(
        model, api_key=api_key, base_url=base_url or DEFAULT_ANTHROPIC_BASE_URL, **overrides
    )


__all__ = ["ModelConfigError", "resolve_model"]
