"""The operators and numpy-style methods of Tensor: thin bindings to the op functions in ops/.

They are written in the class `_Methods` for reading and copied onto `Tensor` below.
"""
import numpy as np

from .ops import arithmetic as _ar, selection as _sel
from .ops import indexing as _ix
from .ops import linalg as _la
from .ops import reductions as _rd
from .ops import shape as _sh
from .ops import unary as _un
from .tensor import Tensor, _make, _numpy_call_kwargs


class _Methods:
    # ---- operators (+ - * / ** @, unary minus and indexing are bound directly below) ------
    def __radd__(self, other):
        return _ar.add(other, self)

    def __rsub__(self, other):
        return _ar.sub(other, self)

    def __rmul__(self, other):
        return _ar.mul(other, self)

    def __rtruediv__(self, other):
        return _ar.div(other, self)

    def __rpow__(self, other):
        return _ar.pow(other, self)

    def __rmatmul__(self, other):
        return _la.matmul(other, self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _un.abs(self)

    def _compare(self, other, fn):
        value = other._data if isinstance(other, Tensor) else other
        return _make(np.asarray(fn(self._data, value)))

    def __lt__(self, other):
        return self._compare(other, np.less)

    def __le__(self, other):
        return self._compare(other, np.less_equal)

    def __gt__(self, other):
        return self._compare(other, np.greater)

    def __ge__(self, other):
        return self._compare(other, np.greater_equal)

    def __eq__(self, other):
        return self._compare(other, np.equal)

    def __ne__(self, other):
        return self._compare(other, np.not_equal)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        fn = _UFUNCS.get(ufunc) if method == "__call__" and not kwargs else None
        if fn is None:
            return NotImplemented
        return fn(*inputs)

    # ---- numpy-style methods -------------------------------------------------------------
    def exp(self):
        return _un.exp(self)

    def log(self):
        return _un.log(self)

    def sqrt(self):
        return _un.sqrt(self)

    def abs(self):
        return _un.abs(self)

    def tanh(self):
        return _un.tanh(self)

    def sigmoid(self):
        return _un.sigmoid(self)

    def relu(self):
        return _un.relu(self)

    def clip(self, min=None, max=None):
        return _un.clip(self, min, max)

    def sum(self, axis=None, keepdims=False, **numpy_kwargs):
        _numpy_call_kwargs("sum", numpy_kwargs)
        return _rd.sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False, **numpy_kwargs):
        _numpy_call_kwargs("mean", numpy_kwargs)
        return _rd.mean(self, axis, keepdims)

    def max(self, axis=None, keepdims=False, **numpy_kwargs):
        _numpy_call_kwargs("max", numpy_kwargs)
        return _rd.max(self, axis, keepdims)

    def min(self, axis=None, keepdims=False, **numpy_kwargs):
        _numpy_call_kwargs("min", numpy_kwargs)
        return _rd.min(self, axis, keepdims)

    def logsumexp(self, axis=None, keepdims=False):
        return _rd.logsumexp(self, axis, keepdims)

    def softmax(self, axis=-1):
        return _rd.softmax(self, axis)

    def log_softmax(self, axis=-1):
        return _rd.log_softmax(self, axis)

    def argmax(self, axis=None, keepdims=False):
        return _make(np.asarray(np.argmax(self._data, axis=axis, keepdims=keepdims)))

    def argmin(self, axis=None, keepdims=False):
        return _make(np.asarray(np.argmin(self._data, axis=axis, keepdims=keepdims)))

    def reshape(self, *shape):
        return _sh.reshape(self, shape[0] if len(shape) == 1 else shape)

    def flatten(self):
        return _sh.reshape(self, (-1,))

    def transpose(self, *axes):
        if len(axes) == 1 and not isinstance(axes[0], (int, np.integer)):
            axes = axes[0]  # t.transpose((1, 0)) as well as t.transpose(1, 0)
        return _sh.transpose(self, axes if len(axes) else None)

    @property
    def T(self):
        return _sh.transpose(self, None)

    def swapaxes(self, axis1, axis2):
        return _sh.swapaxes(self, axis1, axis2)

    def squeeze(self, axis=None):
        return _sh.squeeze(self, axis)

    def astype(self, dtype):
        return _sh.astype(self, dtype)

    def matmul(self, other):
        return _la.matmul(self, other)


for _name, _value in vars(_Methods).items():
    if _name not in ("__module__", "__dict__", "__weakref__", "__doc__", "__qualname__",
                     "__hash__"):  # _Methods defines __eq__, so its __hash__ is None
        setattr(Tensor, _name, _value)

# The commonest operators are the op functions themselves (one Python call fewer than a method
# that calls them).
Tensor.__add__ = _ar.add
Tensor.__sub__ = _ar.sub
Tensor.__mul__ = _ar.mul
Tensor.__truediv__ = _ar.div
Tensor.__pow__ = _ar.pow
Tensor.__matmul__ = _la.matmul
Tensor.__neg__ = _ar.neg
Tensor.__getitem__ = _ix.getitem

_UFUNCS = {
    np.add: _ar.add, np.subtract: _ar.sub, np.multiply: _ar.mul, np.divide: _ar.div,
    np.power: _ar.pow, np.negative: _ar.neg, np.maximum: _sel.maximum, np.minimum: _sel.minimum,
    np.matmul: _la.matmul, np.exp: _un.exp, np.log: _un.log, np.sqrt: _un.sqrt,
    np.abs: _un.abs, np.tanh: _un.tanh,
}


def _comparison(fn):
    def compare(a, b):
        return _make(np.asarray(fn(np.asarray(a), np.asarray(b))))
    return compare


_UFUNCS.update({fn: _comparison(fn) for fn in (np.less, np.less_equal, np.greater,
                                               np.greater_equal, np.equal, np.not_equal)})
