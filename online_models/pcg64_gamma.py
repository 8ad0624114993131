"""numpy's ``Generator(PCG64).standard_gamma`` draws, in one compiled call from a set state.

A page's artwork style pulls are one Thompson draw per style (``ArtworkBandit.style_pulls``):
a PCG64 state set from a hash, then a handful of ``standard_gamma`` calls. Through numpy
that is a state dict, its setter and one Python call per style (~5 µs of a page, more with
cold caches); here the same stream is produced in one kernel call, bit for bit:

- PCG64 is numpy's ``pcg_setseq_128_xsl_rr_64``: the 128-bit state steps by the 128-bit
  multiplier plus the increment, and each 64-bit output is the XSL-RR of the new state
  (emulated with 64-bit halves: numba has no 128-bit integers);
- ``next_double`` is the top 53 bits of an output over 2**53;
- ``standard_gamma`` for ``shape > 1`` is numpy's Marsaglia-Tsang loop
  (``random_standard_gamma`` in numpy's ``distributions.c``) on its ziggurat normal
  (``random_standard_normal``), with numpy's ziggurat tables (numba ships a copy of them for
  its own ``Generator`` support) and the same IEEE operations in the same order.

Shapes of 1 or less take other branches of numpy's algorithm: callers keep numpy for them.
``tests/unit/test_pcg64_gamma.py`` checks outputs, normals and gammas against numpy.
"""

from __future__ import annotations

import numpy as np
from numba.np.random._constants import (  # numpy's ziggurat_constants.h, as numba ships it
    fi_double,
    ki_double,
    wi_double,
    ziggurat_nor_inv_r,
    ziggurat_nor_r,
)

from processors.compiled import kernel

__all__ = ["standard_gamma_draws"]

_MASK_32 = np.uint64(0xFFFFFFFF)
_MULT_HIGH = np.uint64(0x2360ED051FC65DA4)  # PCG_DEFAULT_MULTIPLIER_128
_MULT_LOW = np.uint64(0x4385DF649FCCF645)
_ONE = np.uint64(1)
_U8 = np.uint64(8)
_U11 = np.uint64(11)
_U32 = np.uint64(32)
_U58 = np.uint64(58)
_U63 = np.uint64(63)
_U64 = np.uint64(64)
_LOW_BYTE = np.uint64(0xFF)
_MANTISSA = np.uint64(0x000FFFFFFFFFFFFF)
_TWO_TO_MINUS_53 = 1.0 / 9007199254740992.0


def standard_gamma_draws(seed: bytes, posteriors: np.ndarray) -> list[float] | None:
    """``[float(Generator(PCG64).standard_gamma(shape) * (1.0 / rate)) ...]`` for the
    ``(shape, rate)`` rows of ``posteriors``, on one stream, from a PCG64 state given as 32
    bytes: the position's 16 and the increment's before numpy's ``<< 1 | 1``, each little
    endian (the `ArtworkBandit` hash, as it comes). None, with nothing drawn, unless every
    shape is finite and above 1 (see the module docstring).
    """
    out = np.empty(posteriors.shape[0])
    if not _gamma_draws(seed, posteriors, out):
        return None
    return out.tolist()  # type: ignore[no-any-return]


@kernel(called_by_kernels_only=True)
def _mul_high(a: np.uint64, b: np.uint64) -> np.uint64:  # pragma: no cover - numba
    """The high 64 bits of the 128-bit product ``a * b``."""
    a_low, a_high = a & _MASK_32, a >> _U32
    b_low, b_high = b & _MASK_32, b >> _U32
    low_low = a_low * b_low
    low_high = a_low * b_high
    high_low = a_high * b_low
    middle = (low_low >> _U32) + (low_high & _MASK_32) + (high_low & _MASK_32)
    return a_high * b_high + (low_high >> _U32) + (high_low >> _U32) + (middle >> _U32)


@kernel(called_by_kernels_only=True)
def _next_uint64(state: np.ndarray) -> np.uint64:  # pragma: no cover - numba
    """Step ``state`` (high, low, increment high, increment low) and return the output."""
    high, low = state[0], state[1]
    new_low = low * _MULT_LOW
    new_high = _mul_high(low, _MULT_LOW) + low * _MULT_HIGH + high * _MULT_LOW
    summed = new_low + state[3]
    carry = _ONE if summed < new_low else np.uint64(0)
    new_high = new_high + state[2] + carry
    state[0], state[1] = new_high, summed
    value = new_high ^ summed
    rotation = new_high >> _U58
    return (value >> rotation) | (value << ((_U64 - rotation) & _U63))


@kernel(called_by_kernels_only=True)
def _next_double(state: np.ndarray) -> float:  # pragma: no cover - numba
    return float(_next_uint64(state) >> _U11) * _TWO_TO_MINUS_53


@kernel(called_by_kernels_only=True)
def _standard_normal(state: np.ndarray) -> float:  # pragma: no cover - numba
    """numpy's ``random_standard_normal`` (ziggurat)."""
    while True:
        r = _next_uint64(state)
        idx = np.intp(r & _LOW_BYTE)
        r = r >> _U8
        rabs = (r >> _ONE) & _MANTISSA
        x = float(rabs) * wi_double[idx]
        if r & _ONE:
            x = -x
        if rabs < ki_double[idx]:
            return x
        if idx == 0:
            while True:
                xx = -ziggurat_nor_inv_r * np.log1p(-_next_double(state))
                yy = -np.log1p(-_next_double(state))
                if yy + yy > xx * xx:
                    if (rabs >> _U8) & _ONE:
                        return -(ziggurat_nor_r + xx)
                    return ziggurat_nor_r + xx
        else:
            f_idx = fi_double[idx]
            if (fi_double[idx - 1] - f_idx) * _next_double(state) + f_idx < np.exp(-0.5 * x * x):
                return x


@kernel(called_by_kernels_only=True)
def _word(seed: bytes, start: int) -> np.uint64:  # pragma: no cover - numba
    """The little-endian 64-bit word at ``seed[start:start + 8]``."""
    word = np.uint64(0)
    for index in range(start + 7, start - 1, -1):
        word = (word << _U8) | np.uint64(seed[index])
    return word


@kernel
def _gamma_draws(
    seed: bytes, posteriors: np.ndarray, out: np.ndarray
) -> bool:  # pragma: no cover - numba
    for index in range(posteriors.shape[0]):
        if not 1.0 < posteriors[index, 0] < np.inf:  # NaN too
            return False
    state = np.empty(4, dtype=np.uint64)
    state[0], state[1] = _word(seed, 8), _word(seed, 0)
    increment_low, increment_high = _word(seed, 16), _word(seed, 24)
    state[2] = (increment_high << _ONE) | (increment_low >> _U63)
    state[3] = (increment_low << _ONE) | _ONE
    for index in range(posteriors.shape[0]):
        shape = posteriors[index, 0]
        b = shape - 1.0 / 3.0
        c = 1.0 / np.sqrt(9 * b)
        while True:
            while True:
                x = _standard_normal(state)
                v = 1.0 + c * x
                if v > 0.0:
                    break
            v = v * v * v
            u = _next_double(state)
            if u < 1.0 - 0.0331 * (x * x) * (x * x):
                break
            if np.log(u) < 0.5 * x * x + b * (1.0 - v + np.log(v)):
                break
        out[index] = (b * v) * (1.0 / posteriors[index, 1])
    return True
