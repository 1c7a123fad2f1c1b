"""The provider for a name, built from settings. Real providers are imported only when used."""

from __future__ import annotations

from app.config import ModelSettings
from app.llm.base import ModelProvider, PermanentModelError
from app.llm.offline import OfflineProvider

PROVIDERS = ("offline", "openai", "openai_compatible", "anthropic", "gemini")


def build_provider(name: str, settings: ModelSettings) -> ModelProvider:
    timeout = settings.timeout_seconds
    if name == "offline":
        return OfflineProvider()
    if name in ("openai", "openai_compatible"):
        from app.llm.openai_provider import OpenAIProvider  # noqa: PLC0415 - SDK loaded only when configured

        if name == "openai":
            return OpenAIProvider(api_key=settings.openai_api_key, base_url=settings.openai_base_url, timeout=timeout)
        if not settings.compatible_base_url:
            msg = "openai_compatible needs BOTARMY_OPENAI_COMPATIBLE_BASE_URL (e.g. http://localhost:11434/v1)"
            raise PermanentModelError(msg, code="missing_base_url")
        return OpenAIProvider(
            api_key=settings.compatible_api_key,
            base_url=settings.compatible_base_url,
            timeout=timeout,
            name="openai_compatible",
        )
    if name == "anthropic":
        from app.llm.anthropic_provider import AnthropicProvider  # noqa: PLC0415

        return AnthropicProvider(
            api_key=settings.anthropic_api_key, base_url=settings.anthropic_base_url, timeout=timeout
        )
    if name == "gemini":
        from app.llm.gemini_provider import GeminiProvider  # noqa: PLC0415

        return GeminiProvider(api_key=settings.gemini_api_key, base_url=settings.gemini_base_url, timeout=timeout)
    raise PermanentModelError(f"unknown provider {name!r}; use one of {', '.join(PROVIDERS)}", code="bad_provider")
