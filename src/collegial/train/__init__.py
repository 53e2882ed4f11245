"""Training with the paper's recipes: data, loop, checkpoints, throughput. Calling the package,
``collegial.train(family, arch, out=...)``, runs :func:`collegial.api.train`."""
import sys as _sys
import types as _types


class _CallablePackage(_types.ModuleType):
    """``collegial.train(...)`` is :func:`collegial.api.train` (the package keeps its modules)."""

    def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        from collegial.api import train

        return train(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
