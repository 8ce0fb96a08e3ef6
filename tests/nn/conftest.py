"""Fixtures the nn tests share."""
import pytest


@pytest.fixture(scope="module")
def torch_one_thread():
    """torch limited to one intra-op thread for a module's tests (tiny tensors: more threads
    only add contention), restored afterwards."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
