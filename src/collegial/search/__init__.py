"""The primal/dual architecture search. Calling the package, ``collegial.search(family,
baseline, ...)``, runs :func:`collegial.api.search`."""

import sys as _sys
import types as _types


class _CallablePackage(_types.ModuleType):
    """``collegial.search(...)`` is :func:`collegial.api.search` (the package keeps its modules)."""

    def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        from collegial.api import search

        return search(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
