"""collegial: Collegial Ensembles (Littwin et al., NeurIPS 2020) as research software."""

import os as _os

# OpenMP threads that spin while waiting make torch 5-10x slower on a shared machine (measured
# on the 2-core dev box under load). Passive waiting costs little on an idle machine: nothing
# measurable on Algorithm 1 (large ops), ~20% on workloads of many small ops (empirical NTK of
# an MLP at N = 64: 17.5 ms vs 14.3 ms with GOMP_SPINCOUNT=10000, which spins ~0.1 ms first).
# Only applies when set before torch is imported; a value the user set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
