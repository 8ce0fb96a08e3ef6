"""Review 19e: hostile probes of the last hour's changes: the rows of a batched node gathered at
its step (replayer._row_extractions, gathered_rows, kind "row"), stack as one concatenate,
2-D products through the array's dot, Sum through the array's sum, an accumulator started at
0.0 (batching._zero_start) and the recomputed values of reassociated sums. Every replayed call
is compared with eager mode in float64 (loss and gradients, 1e-12 relative scaled by the
largest gradient).

Each problem the review found has its test here, above the line; below it, what held."""

import numpy as np
import pytest

import autograd_core as ag
from autograd_core import replay_codegen
from autograd_core.ops.linalg import product

from tests.autograd_core.replay_checks import check, param

pytestmark = pytest.mark.filterwarnings("ignore::autograd_core.replayer.ReplayWarning")

B, I, H = 3, 4, 5


def _plan(step):
    plans = [p for p in step.plans.values() if not isinstance(p, str) and p.confirmed]
    assert len(plans) == 1
    return plans[0]


def _kinds(step):
    return [s[3] for s in _plan(step).steps]


@pytest.fixture(params=["generated", "loops"])
def backward_code(request, monkeypatch):
    """Both ways a confirmed plan's backward runs: generated code, and _Plan._sweep."""
    if request.param == "loops":
        monkeypatch.setattr(replay_codegen, "compile_backward", lambda *a: None)
    return request.param


# ---- problems ------------------------------------------------------------------------------
def test_rows_of_mixed_dtypes_keep_the_dtype_of_the_first_gradient_to_arrive(backward_code):
    """x (float32) is read by x[0..T-1]; row 0's gradient is float32 (through astype), the
    others' float64. Eager mode (and the zero buffer the rows were added into before) takes
    the dtype of the first gradient to arrive, the newest row's: float64. gathered_rows took
    row 0's, float32, so the float64 parameter's gradient was rounded to float32 (1e-8
    relative)."""
    rng = np.random.default_rng(1)
    T = 5
    p, w = param(rng, T, H), param(rng, H)

    def fn():
        x = p.astype(np.float32) * 2.0
        h, loss = ag.zeros((H,)), 0.0
        for t in range(T):
            a = x[t].astype(np.float64) if t == 0 else x[t]
            h = ag.tanh(a + h * w)
            loss = loss + (h * h).sum()
        return loss

    step = check(fn, [p, w])
    assert _plan(step).batched and "row" in _kinds(step)


@pytest.mark.parametrize("a, b", [
    (np.random.default_rng(0).standard_normal((17, 66))[:, ::2],
     np.random.default_rng(1).standard_normal((9, 33)).astype(np.float32).T),
    (np.array([[-1.0]]), np.array([[False]])),
    (np.array([[-1.0]]), np.array([[0.0]])),
    (np.array([[-1.0]], np.float32), np.array([[0.0]], np.float32)),
])
def test_a_2d_product_has_the_bits_of_np_matmul(a, b):
    """a.dot(b) rounds otherwise than np.matmul for operands of two dtypes (strided ones),
    and gives -0.0 for [[-1.]] @ [[0.]] where np.matmul gives 0.0 (so 1 / (x @ w) was -inf
    where numpy gives inf)."""
    want = np.matmul(a, b)
    got = product(a, b)
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    if a.dtype != bool and b.dtype != bool:
        t = ag.matmul(ag.Tensor(a), ag.Tensor(b)).numpy()
        assert t.dtype == want.dtype and t.tobytes() == want.tobytes()
