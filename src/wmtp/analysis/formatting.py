"""How the report writes numbers: significant digits, scientific notation for the very large and small, "—"
for a missing value, intervals as [low, high]."""

from __future__ import annotations

import math


def fmt(x: float | None, digits: int = 4) -> str:
    """`digits` significant digits; "—" for None or NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if x != 0 and (abs(x) >= 1e6 or abs(x) < 1e-3):
        return f"{x:.{max(digits - 1, 1)}e}"
    return f"{x:.{digits}g}"


def fmt_ci(low: float | None, high: float | None, digits: int = 4) -> str:
    """`[low, high]`; "—" when either end is missing."""
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "—"
    return f"[{fmt(low, digits)}, {fmt(high, digits)}]"
