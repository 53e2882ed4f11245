"""``--budget-value X``: a budget written as on a command line (``13.8M``, ``4.2G``, ``500k``,
``12345``) as the integer count :func:`collegial.search.solve.search` takes."""

from __future__ import annotations

import math

from collegial.errors import UserError
from collegial.search.solve import MAX_BUDGET


def parse_budget_value(text: str | int | None) -> int | None:
    """``"13.8M"`` / ``"4.2G"`` / ``"500k"`` / ``"12345"`` -> int; None (and an int) pass through.
    :class:`UserError` naming ``budget_value`` when malformed, not positive or above
    :data:`~collegial.search.solve.MAX_BUDGET`."""
    if text is None or isinstance(text, int):
        return text
    s = str(text).strip()
    mult = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}.get(s[-1:].lower(), 1.0)
    num = s[:-1] if mult != 1.0 else s
    try:
        val = float(num) * mult
    except ValueError:
        raise UserError(f"malformed `budget_value` {text!r}; expected e.g. 13.8M or 4.2G") from None
    if not math.isfinite(val) or val <= 0:
        raise UserError(f"`budget_value` {text!r} must be positive")
    if val > MAX_BUDGET:
        raise UserError(f"`budget_value` {text!r} exceeds {MAX_BUDGET:.0e}")
    return int(round(val))
