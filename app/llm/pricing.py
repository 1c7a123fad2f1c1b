"""USD per million tokens (input, output), by model name prefix; the longest matching prefix wins.

Figures as the providers list them; a model not in the table costs nothing (local models).
"""

from __future__ import annotations

PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-haiku-4": (1.00, 5.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-pro": (1.25, 10.00),
}


def price_of(model: str) -> tuple[float, float]:
    matches = [prefix for prefix in PRICES_PER_MILLION if model.startswith(prefix)]
    return PRICES_PER_MILLION[max(matches, key=len)] if matches else (0.0, 0.0)


def cost_usd(model: str, tokens_in: int, tokens_out: int) -> float:
    price_in, price_out = price_of(model)
    return round((tokens_in * price_in + tokens_out * price_out) / 1_000_000, 8)
