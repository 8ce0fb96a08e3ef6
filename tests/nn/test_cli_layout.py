"""The command line's layout: one module per subcommand with one interface, no import cycle
back into the package, and only public names of nn and autograd_core."""
import ast
import pathlib

import nn.cli

CLI = pathlib.Path(nn.cli.__file__).parent


def _modules():
    return sorted(p for p in CLI.glob("*.py") if p.name != "__init__.py")


def test_every_subcommand_is_a_module_with_the_same_interface():
    assert list(nn.cli.COMMANDS) == ["train", "report", "check", "graph", "explore", "bench",
                                     "demo"]
    for name, module in nn.cli.COMMANDS.items():
        assert module.__name__ == f"nn.cli.{name}"
        for attr in ("HELP", "DESCRIPTION", "EPILOG"):
            assert isinstance(getattr(module, attr), str) and getattr(module, attr), (name, attr)
        assert callable(module.add_arguments) and callable(module.run)


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            yield base, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def test_no_module_imports_the_cli_package_back():
    # the package imports the subcommands; a subcommand importing `nn.cli` (or `.`'s names)
    # would be the cycle cli <-> report_command of old
    submodules = {p.stem for p in _modules()}
    for path in _modules():
        for base, names in _imports(path):
            if base in ("nn.cli", "."):  # `from . import sizes` is a sibling, not __init__
                assert set(names) <= submodules, (path.name, base, names)


def test_only_public_names_of_nn_and_autograd_core():
    for path in [*_modules(), CLI / "__init__.py"]:
        for base, names in _imports(path):
            assert not any(n.startswith("_") for n in names), (path.name, base, names)
            parts = base.lstrip(".").split(".")
            assert not any(p.startswith("_") for p in parts if p), (path.name, base)
            if base.startswith("autograd_core"):
                assert base == "autograd_core", (path.name, base)  # the package's own exports
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in ("ag", "nn"):
                assert not node.attr.startswith("_"), (path.name, node.attr)
