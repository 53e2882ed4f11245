"""collegial: Collegial Ensembles (Littwin et al., NeurIPS 2020) as research software."""

import os as _os

# OpenMP threads that spin while waiting make torch 5-10x slower on a shared machine (measured
# on the 2-core dev box under load). Passive waiting costs little on an idle machine: nothing
# measurable on Algorithm 1 (large ops), ~20% on workloads of many small ops (empirical NTK of
# an MLP at N = 64: 17.5 ms vs 14.3 ms with GOMP_SPINCOUNT=10000, which spins ~0.1 ms first).
# Only applies when set before torch is imported; a value the user set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

#: The Python API (:mod:`collegial.api`), imported on first use: ``collegial.fit_alpha(...)``,
#: ``collegial.search(...)``, ``collegial.verify(...)``, ``collegial.train(...)`` and the readers.
_API = ("fit_alpha", "verify", "load_search", "load_verify", "load_figure1", "load_run")


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    if name in _API:
        from collegial import api

        return getattr(api, name)
    if name in ("search", "train"):  # packages that are also callable (see their __init__)
        import importlib

        return importlib.import_module(f"collegial.{name}")
    raise AttributeError(f"module 'collegial' has no attribute {name!r}")
