"""torch stays optional: `import nn` never imports it, and the bridge says how to get it.

Run in fresh interpreters, so no earlier test's `import torch` hides an import."""
import subprocess
import sys


def run(code):
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_nn_does_not_import_torch():
    out = run("import sys, nn, nn.torch_bridge, autograd_core\n"
              "print('torch' in sys.modules, 'nn.torch_modules' in sys.modules)")
    assert out == "False False"


def test_without_torch_the_bridge_names_the_extra():
    out = run("import sys\n"
              "sys.modules['torch'] = None  # makes `import torch` fail, as when absent\n"
              "import nn\n"
              "for call in (lambda: nn.to_torch(nn.Linear(2, 3, rng=0)),\n"
              "             lambda: nn.from_torch(object())):\n"
              "    try:\n"
              "        call()\n"
              "    except ImportError as e:\n"
              "        print(e)\n")
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("to_torch needs PyTorch") and "autograd-core[torch]" in lines[0]
    assert lines[1].startswith("from_torch needs PyTorch") and "torch==2.13.0" in lines[1]
