"""Softmax cross-entropy of integer class targets in one node, per row
(softmax_cross_entropy) or as the mean over the rows (mean_softmax_cross_entropy, nn's
default reduction of a batch): computed from the shifted logits, so logits of any size are
safe, and the probabilities the rule reads are kept from the forward."""
import numpy as np

from ..exact_scalars import exact
from ..function import Memory, Op, as_tensor, record
from .reductions import mean_array, softmax
from .shape import broadcast_array

__all__ = ["mean_softmax_cross_entropy", "softmax_cross_entropy"]  # exported as ag.<name>


class SoftmaxCrossEntropy(Op):
    """-log softmax(x)[target] along the last axis, per row, in one node:
    d/dx = (softmax(x) - onehot(target)) * g. The forward keeps the probabilities."""
    name = "softmax_cross_entropy"
    inputs = ("logits",)
    saves = ("target", "logits")
    arguments = ("target",)  # not differentiated; copied when recorded
    view = False
    rule = "(softmax(x) - onehot(target)) g"
    hazard = None
    memory = Memory()
    batch = "rows"

    @staticmethod
    def forward(out, x):
        target = out._saved[0]
        _check_classes(target, x.shape[-1], out._op.name)  # a replayed call's targets are new
        loss, probs = softmax_cross_entropy_arrays(x, target)
        out._saved = (target, probs)  # this call's probabilities, for the rule
        return loss

    @staticmethod
    def backward(g, out, xp):
        target, probs = out._saved
        if xp.recording:  # create_graph: the probabilities as a function of x
            onehot = np.zeros(probs.shape, dtype=probs.dtype)
            np.put_along_axis(onehot, target[..., None], 1, axis=-1)
            return ((softmax(out._inputs[0], axis=-1) - onehot) * g[..., None],)
        grad = np.multiply(probs, g[..., None], order="C")
        rows = grad.reshape(-1, probs.shape[-1])  # a view: grad is new and C-ordered
        rows[_row_numbers(rows.shape[0]), target.reshape(-1)] -= g.reshape(-1)
        return (grad,)


# softmax_cross_entropy's kernel and rule as declared, which the mean's run on its rows: a
# rule put in place of softmax_cross_entropy's is that op's, not the mean's (eager mode and
# replay then run the mean's declared rule alike)
_rows_forward, _rows_backward = SoftmaxCrossEntropy.forward, SoftmaxCrossEntropy.backward


class MeanSoftmaxCrossEntropy(SoftmaxCrossEntropy):
    """The mean over the rows (axis -2) of softmax_cross_entropy, in one node: logits
    (..., N, C) and targets (..., N) give (...): a batch's loss, or each step's L_t of
    logits (T, N, C). d/dx = (softmax(x) - onehot(target)) g / N. The same numbers as
    softmax_cross_entropy followed by mean over the rows, with one node less to record and
    to sweep (nn.cross_entropy's default reduction of a batch)."""
    name = "mean_softmax_cross_entropy"
    rule = "(softmax(x) - onehot(target)) g / N"
    batch = "rows"

    @staticmethod
    def forward(out, x):
        loss = _rows_forward(out, x)
        return mean_array(loss, (loss.ndim - 1,), False)

    @staticmethod
    def backward(g, out, xp):
        target = out._saved[0]
        # mean's rule, then softmax_cross_entropy's: the same calls, the same bits (scaled
        # before it is spread; 1/N as an array of g's dtype where it holds it exactly)
        scale = 1.0 / target.shape[-1]
        if xp.recording:
            rows = xp.broadcast_to((g * scale).reshape(g.shape + (1,)), target.shape)
            return _rows_backward(rows, out, xp)
        row_grad = g * exact[g.dtype][scale]
        if target.ndim == 1:  # one batch (the common case): every row gets the same value, so
            # the parent's products and subtraction take it as is, not spread over the rows
            # (the same numbers: each element meets the same value either way)
            probs = out._saved[1]
            grad = np.multiply(probs, row_grad, order="C")
            grad[_row_numbers(target.shape[0]), target] -= row_grad
            return (grad,)
        return _rows_backward(broadcast_array(row_grad[..., None], target.shape), out, xp)


def _row_numbers(n):
    """0..n-1, kept: the same batch size comes back every step."""
    rows = _ROWS.get(n)
    if rows is None:
        if len(_ROWS) > 64:
            _ROWS.clear()
        rows = _ROWS[n] = np.arange(n)
    return rows


_ROWS = {}


def softmax_cross_entropy(logits, target):
    """Cross-entropy of integer class `target` (shape logits.shape[:-1]) under softmax(logits)
    along the last axis; one loss per row, no reduction. Stable for logits of any size."""
    logits, target = _checked_targets("softmax_cross_entropy", logits, target, 1)
    return checked_softmax_cross_entropy(logits, target)


def mean_softmax_cross_entropy(logits, target):
    """The mean over the rows of softmax_cross_entropy: logits (..., N, C) and integer
    targets (..., N) give (...), one node. For logits (N, C) the batch's mean loss (as
    nn.cross_entropy's default reduction); for (T, N, C) each step's mean."""
    logits, target = _checked_targets("mean_softmax_cross_entropy", logits, target, 2)
    if not target.shape[-1]:
        raise ValueError(f"mean_softmax_cross_entropy: no rows to average (logits of shape "
                         f"{logits.shape})")
    return checked_mean_softmax_cross_entropy(logits, target)


def _checked_targets(op, logits, target, dims):
    """(logits as a tensor of at least `dims` axes, target as an integer array of the
    logits' shape without the class axis, every class in range)."""
    logits = as_tensor(logits)
    target = np.asarray(target._data if hasattr(target, "_data") else target)
    if logits.ndim < dims:
        raise ValueError(f"{op}: logits need {'a row and ' if dims == 2 else ''}a class axis, "
                         f"got shape {logits.shape}")
    if target.shape != logits.shape[:-1]:
        raise ValueError(f"{op}: target shape {target.shape} must be the logits' shape "
                         f"{logits.shape} without its last axis")
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold integer classes, got dtype {target.dtype}")
    _check_classes(target, logits.shape[-1], op)
    return logits, target


def _check_classes(target, classes, op="softmax_cross_entropy"):
    if not target.size:
        return
    unsigned = _UNSIGNED.get(target.dtype)
    if unsigned is not None and classes <= _SIGNED_LIMIT[unsigned]:
        # one pass: seen as unsigned, a negative class is at least 2**(bits - 1) >= classes.
        # (argmax and item: the largest without a reduce's machinery, ~1 us less a batch)
        seen = target.view(unsigned)
        bad = seen.item(seen.argmax()) >= classes
    else:
        bad = target.item(target.argmin()) < 0 or target.item(target.argmax()) >= classes
    if bad:
        raise IndexError(f"{op}: target class out of range [0, {classes})")


# the native signed integer dtypes, each with the unsigned dtype of its size; and for those,
# the largest class count whose range check one pass over the unsigned view can make
_UNSIGNED = {np.dtype(s): np.dtype(u) for s, u in
             ((np.int8, np.uint8), (np.int16, np.uint16), (np.int32, np.uint32),
              (np.int64, np.uint64))}
_SIGNED_LIMIT = {u: 2 ** (8 * u.itemsize - 1) for u in _UNSIGNED.values()}


def checked_softmax_cross_entropy(logits, target):
    """softmax_cross_entropy for a Tensor `logits` and an integer array `target` that the
    caller has checked (nn's cross_entropy, whose errors name it)."""
    loss, probs = softmax_cross_entropy_arrays(logits._data, target)
    return record(SoftmaxCrossEntropy, loss, (logits,), (target, probs))


def checked_mean_softmax_cross_entropy(logits, target):
    """mean_softmax_cross_entropy for a Tensor `logits` (at least 2-D, with rows) and an
    integer array `target` that the caller has checked."""
    loss, probs = softmax_cross_entropy_arrays(logits._data, target)
    return record(MeanSoftmaxCrossEntropy, mean_array(loss, (loss.ndim - 1,), False),
                  (logits,), (target, probs))


def softmax_cross_entropy_arrays(x, target):
    """(the loss of each row, the probabilities the rule reads)."""
    if x.dtype.kind in "biu":  # in the float dtype exp gives them: x - max would wrap around
        x = x.astype(np.result_type(x.dtype, np.float16))  # in uint8 (or int8 for 100 - -100)
    # the ufuncs' reduce is what ndarray.max and .sum run, without the Python around them
    shifted = x - np.maximum.reduce(x, axis=-1, keepdims=True)
    rows = shifted.ndim == 2  # a batch of rows (the common case): no reshapes
    flat = shifted if rows else shifted.reshape(-1, x.shape[-1])
    picked = flat[_row_numbers(flat.shape[0]), target if rows else target.reshape(-1)]
    # shifted is this function's own array: exp and the division go into it (the same
    # numbers, without two more arrays of the logits' size)
    e = np.exp(shifted, out=shifted)
    total = np.add.reduce(e, axis=-1, keepdims=True)
    # (the same subtraction either way; the second keeps a 0-d loss an array)
    loss = (np.log(total)[:, 0] - picked if rows
            else (np.log(total) - picked.reshape(total.shape))[..., 0])
    return loss, np.divide(e, total, out=e)
