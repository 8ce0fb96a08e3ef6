"""ag.tune_gc(): an opt-in that raises the collector's first threshold, never lowers it."""
import gc

import autograd_core as ag


def test_tune_gc_raises_the_first_threshold_only(monkeypatch):
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        assert ag.tune_gc() is True
        assert gc.get_threshold() == (20_000, 10, 10)
        gc.set_threshold(50_000, 10, 10)
        ag.tune_gc()
        assert gc.get_threshold() == (50_000, 10, 10)  # never lowered
        gc.set_threshold(700, 10, 10)
        monkeypatch.setenv("AUTOGRAD_CORE_GC", "0")
        assert ag.tune_gc() is False and gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*before)


def test_import_leaves_the_collector_alone():
    import subprocess
    import sys
    code = "import gc; t = gc.get_threshold(); import autograd_core; print(gc.get_threshold() == t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
