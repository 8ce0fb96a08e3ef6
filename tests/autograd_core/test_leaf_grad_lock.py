"""The lock around the .grad writes at the end of a backward: taken once for all the leaves
when none has hooks, leaf by leaf after each leaf's hooks otherwise (a hook may run a backward
of its own, or raise), and never left held."""
import threading

import numpy as np
import pytest

import autograd_core as ag
from autograd_core import sweep_state
from autograd_core.tensor import Tensor


def _lock_is_free():
    if sweep_state._grad_lock.acquire(timeout=5):
        sweep_state._grad_lock.release()
        return True
    return False


def test_a_hook_that_raises_leaves_the_lock_free_and_the_earlier_leaves_written():
    a = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = Tensor(np.array([3.0, 4.0]), requires_grad=True)
    c = Tensor(np.array([5.0, 6.0]), requires_grad=True)

    def fail(g):
        raise KeyboardInterrupt

    b.register_hook(fail)
    with pytest.raises(KeyboardInterrupt):
        (a * b * c).sum().backward()
    assert _lock_is_free()
    b._hooks = None
    a.grad = b.grad = c.grad = None
    (a * b * c).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [15.0, 24.0])
    np.testing.assert_array_equal(b.grad.numpy(), [5.0, 12.0])
    np.testing.assert_array_equal(c.grad.numpy(), [3.0, 8.0])


def test_a_hook_that_runs_a_backward_into_the_same_leaves():
    """The hook's backward writes .grad of the outer backward's leaves while the outer one
    waits at that leaf: both contributions arrive, nothing deadlocks."""
    w = Tensor(np.array([2.0, -1.0]), requires_grad=True)
    x = Tensor(np.array([0.5, 3.0]), requires_grad=True)

    def inner(g):
        with ag.enable_grad():
            (w * w).sum().backward()  # adds 2 w to w.grad

    x.register_hook(inner)
    (w * x).sum().backward()
    leaves_hook_first = w.grad.numpy()
    # w's own gradient x, plus the inner backward's 2 w, in whichever order they came
    np.testing.assert_array_equal(leaves_hook_first, x.numpy() + 2 * np.array([2.0, -1.0]))
    np.testing.assert_array_equal(x.grad.numpy(), w.numpy())
    assert _lock_is_free()


def test_backwards_in_threads_sharing_leaves_lose_nothing():
    w = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    b = Tensor(np.array([0.5, 0.5, 0.5]), requires_grad=True)
    errors = []

    def work():
        try:
            for _ in range(200):
                (w * 2.0 + b).sum().backward()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)
    np.testing.assert_array_equal(w.grad.numpy(), [1600.0] * 3)
    np.testing.assert_array_equal(b.grad.numpy(), [800.0] * 3)
    assert _lock_is_free()


def test_grad_with_hooked_leaves_writes_no_grad_and_takes_no_lock():
    a = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = Tensor(np.array([3.0, 4.0]), requires_grad=True)
    seen = []
    b.register_hook(lambda g: seen.append(g.numpy().copy()))
    sweep_state._grad_lock.acquire()  # grad() must not need it
    try:
        ga, = ag.grad((a * b).sum(), [a])
    finally:
        sweep_state._grad_lock.release()
    np.testing.assert_array_equal(ga.numpy(), [3.0, 4.0])
    np.testing.assert_array_equal(seen[0], [1.0, 2.0])
    assert a.grad is None and b.grad is None
