"""Compiled kernels for the engine's hot loops: one decorator, one set of rules.

Why numba: a page is built from a few hundred candidates and sessions, and at that size each
numpy call costs more in dispatch and allocation than in arithmetic (a page was ~40 small
numpy calls). A loop compiled by numba does the same arithmetic in one call, on the arrays
the engine already holds, with no build step for users (a pure-Python alternative was
profiled to its end: BENCHMARKS.md, "The engine's hot path").

Rules for a kernel:

- plain loops over numpy arrays and scalars; no Python objects cross the boundary;
- the same IEEE operations in the same order as the code it replaces (``fastmath`` off, no
  reassociation), so a compiled path gives bit-identical results: the engine digests
  (``python -m stream.bench.engine_digest``) must not move when a stage is compiled;
- ``cache=True``: the machine code is kept next to the module (``__pycache__``), so only the
  first process after an install or a change pays the compilation (10-20 s for all of them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

import numba

__all__ = ["KERNELS", "kernel"]

_F = TypeVar("_F", bound=Callable[..., Any])

#: Every kernel Python calls, by qualified name: the worker's warm-up is checked against it.
KERNELS: dict[str, Any] = {}


@overload
def kernel(function: _F, /) -> _F: ...


@overload
def kernel(*, called_by_kernels_only: bool) -> Callable[[_F], _F]: ...


def kernel(
    function: _F | None = None, /, *, called_by_kernels_only: bool = False
) -> _F | Callable[[_F], _F]:
    """Compile ``function`` with numba in nopython mode (cached, GIL released, no fastmath).

    ``called_by_kernels_only`` marks a helper that only other kernels call: it is compiled
    into them (and cached with them), so it never has a signature of its own to warm up.
    """

    def compile_(target: _F) -> _F:
        dispatcher = numba.njit(cache=True, nogil=True, fastmath=False)(target)
        if not called_by_kernels_only:
            KERNELS[f"{target.__module__}.{target.__qualname__}"] = dispatcher
        return dispatcher  # type: ignore[no-any-return]

    return compile_ if function is None else compile_(function)
