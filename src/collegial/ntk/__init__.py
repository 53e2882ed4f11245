"""Neural tangent kernels: empirical NTK, Monte Carlo NTK variance, Algorithm 1 (alpha fit).

* :func:`empirical_ntk` / :func:`empirical_ntk_fn` -- the empirical NTK of any ``nn.Module``
  (Jacobian contraction, NTK-vector products, structured derivatives; see
  :mod:`collegial.ntk.empirical`).
* :class:`Moments`, :func:`normalized_variance` -- streaming ``Var[K] / E[K]^2`` with a
  standard error (:mod:`collegial.ntk.variance`).
* :func:`run_algorithm1` -> :class:`AlphaFit` -- SPEC section 3 (:mod:`collegial.ntk.alpha`,
  probes in :mod:`collegial.ntk.probe`); every probe engine is a :class:`ProbeEngine`
  (:mod:`collegial.ntk.engine`).
"""

from collegial.ntk.alpha import AlphaFit, run_algorithm1, variance_model, variance_stderr
from collegial.ntk.empirical import (
    NtkMethod,
    empirical_ntk,
    empirical_ntk_fn,
    ntk_autograd_loop,
)
from collegial.ntk.engine import ProbeEngine
from collegial.ntk.variance import Moments, NormalizedVariance, normalized_variance

__all__ = [
    "AlphaFit",
    "Moments",
    "NormalizedVariance",
    "NtkMethod",
    "ProbeEngine",
    "empirical_ntk",
    "empirical_ntk_fn",
    "normalized_variance",
    "ntk_autograd_loop",
    "run_algorithm1",
    "variance_model",
    "variance_stderr",
]
