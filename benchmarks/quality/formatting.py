"""Numbers as the quality report prints them: fractions as percentage points with one decimal."""

from __future__ import annotations


def pct(value: float, *, signed: bool = False) -> str:
    """``0.123`` as ``12.3`` (``+12.3`` when ``signed``)."""
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def ci(low: float, high: float, *, signed: bool = False) -> str:
    """A 95% interval of fractions as ``[low, high]`` in points."""
    return f"[{pct(low, signed=signed)}, {pct(high, signed=signed)}]"
