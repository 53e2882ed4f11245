"""collegial: Collegial Ensembles (Littwin et al., NeurIPS 2020) as research software."""

__version__ = "0.1.0"
