"""What the replay review tests share: a parameter, one call's loss and gradients, and the
comparison of replayed calls with eager mode (float64: 1e-12 relative, scaled by the largest
gradient; batch=False bit for bit)."""
import numpy as np

import autograd_core as ag


def param(rng, *shape, dtype=np.float64):
    return ag.Tensor((rng.standard_normal(shape) * 0.5).astype(dtype), requires_grad=True)


def run(fn, params, args):
    for p in params:
        p.grad = None
    out = fn(*args)
    value = out.numpy().copy()
    out.backward()
    return value, [None if p.grad is None else p.grad.numpy().copy() for p in params]


def assert_same(got, want, what=""):
    (v, gs), (wv, ws) = got, want
    assert np.asarray(v).dtype == np.asarray(wv).dtype, f"{what}: loss dtype"
    np.testing.assert_allclose(v, wv, rtol=1e-12, atol=1e-12 * max(1.0, np.nanmax(np.abs(wv))),
                               err_msg=f"{what}: loss")
    finite = [np.nanmax(np.abs(w)) for w in ws if w is not None and w.size]
    scale = max([1.0] + [f for f in finite if np.isfinite(f)])
    for k, (g, w) in enumerate(zip(gs, ws)):
        assert (g is None) == (w is None), f"{what}: gradient {k} missing on one side"
        if w is not None:
            assert g.dtype == w.dtype and g.shape == w.shape, f"{what}: gradient {k} dtype/shape"
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12 * scale,
                                       err_msg=f"{what}: gradient {k}")


def assert_bits(got, want, what=""):
    (v, gs), (wv, ws) = got, want
    assert v.tobytes() == wv.tobytes(), f"{what}: loss bits"
    for k, (g, w) in enumerate(zip(gs, ws)):
        assert (g is None) == (w is None)
        if w is not None:
            assert g.dtype == w.dtype and g.tobytes() == w.tobytes(), f"{what}: gradient {k}"


def check(fn, params, argsets=((),), calls=5, batch=True, between=None):
    """Replayed calls of fn against eager calls, one per call (argsets cycle; with
    batch=False bit for bit); `between(k)` runs before call k on both sides (the same
    state). Returns the Replay."""
    step = ag.replay(fn, batch=batch)
    for k in range(calls):
        if between is not None:
            between(k)
        args = argsets[k % len(argsets)]
        got = run(step, params, args)
        want = run(fn, params, args)
        (assert_same if batch else assert_bits)(got, want, f"call {k}")
    return step
