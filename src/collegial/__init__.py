"""collegial: Collegial Ensembles (Littwin et al., NeurIPS 2020) as research software."""

import os as _os

# OpenMP threads that spin while waiting make torch 5-10x slower on a shared machine (measured
# on the 2-core dev box under load); passive waiting costs nothing measurable when it is idle.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
