"""Architecture strings.

* Collegial ensembles / ResNeXt: ``MxNd`` -> (m, n), e.g. ``37x10d`` = 37 paths of width 10,
  ``1x128d`` = a plain (single-path) ResNet of width 128.
* Wide ResNets: ``DEPTH-K`` -> (depth, k), e.g. ``28-10``.
"""

from __future__ import annotations

import re

from collegial.errors import UserError

#: Largest multiplicity, width and total paths*width accepted. Beyond these a model could never
#: be built in memory (ResNeXt-29's last stage alone would hold > 10^11 weights).
MAX_M = 65536
MAX_N = 65536
MAX_MN = 1 << 20

_CE_RE = re.compile(r"([1-9][0-9]{0,8})x([1-9][0-9]{0,8})d")
_WRN_RE = re.compile(r"([1-9][0-9]{0,4})-([1-9][0-9]{0,4})")


class ArchError(UserError, ValueError):
    """A malformed or impossible architecture string."""


def parse_arch(s: str) -> tuple[int, int]:
    """Parse ``'MxNd'`` into ``(m, n)``; raise :class:`ArchError` on anything else."""
    if not isinstance(s, str) or not s:
        raise ArchError("empty architecture string; expected MxNd, e.g. 37x10d")
    match = _CE_RE.fullmatch(s.strip())
    if match is None:
        raise ArchError(
            f"malformed architecture {s!r}; expected MxNd with positive integers, e.g. 37x10d or 1x128d"
        )
    m, n = int(match.group(1)), int(match.group(2))
    if m > MAX_M or n > MAX_N or m * n > MAX_MN:
        raise ArchError(
            f"architecture {s!r} is too large (m <= {MAX_M}, n <= {MAX_N}, m*n <= {MAX_MN})"
        )
    return m, n


def format_arch(m: int, n: int) -> str:
    """``(37, 10) -> '37x10d'``."""
    return f"{m}x{n}d"


def parse_wrn(s: str) -> tuple[int, int]:
    """Parse a Wide ResNet string ``'DEPTH-K'`` (``'28-10'``) into ``(depth, k)``."""
    if not isinstance(s, str) or not s:
        raise ArchError("empty Wide ResNet string; expected DEPTH-K, e.g. 28-10")
    match = _WRN_RE.fullmatch(s.strip())
    if match is None:
        raise ArchError(f"malformed Wide ResNet {s!r}; expected DEPTH-K, e.g. 28-10")
    depth, k = int(match.group(1)), int(match.group(2))
    if k > 64:
        raise ArchError(f"Wide ResNet {s!r} is too large (k <= 64)")
    return depth, k
