"""Imports only go down: a module of one stage never imports a stage above it."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "nudiff"

# lowest first; a unit may import its own layer's other units only where listed in SAME_LAYER_OK
LAYERS = [
    {"nudiff", "utils"},
    {"config", "layout", "checkpoint"},
    {"structure"},
    {"data"},
    {"metrics", "pictures"},
    {"training", "model_folder"},
    {"diffusion"},
    {"segment"},
    {"models"},
    {"quality"},
    {"synthesis"},
    {"experiment"},
    {"augment"},
    {"cli"},
]
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def _unit(module: str) -> str:
    """``nudiff.data.io`` -> ``data``; ``nudiff`` -> ``nudiff``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] == "nudiff"
        ):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "nudiff"}
    return found


def test_every_unit_has_a_layer():
    units = {
        _unit(".".join(("nudiff", *p.relative_to(PACKAGE).with_suffix("").parts)))
        for p in PACKAGE.rglob("*.py")
    }
    assert units - {"__init__", "__main__"} <= set(RANK), sorted(units - set(RANK))


def test_imports_only_go_down():
    """Function-level imports count too: a lazy import is still a dependency."""
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("").parts
        unit = rel[0] if rel[0] not in ("__init__", "__main__") else "nudiff"
        if unit == "__main__":
            unit = "cli"
        for module in _imports(path):
            other = _unit(module)
            if other != unit and RANK[other] >= RANK[unit]:
                upward.append(f"{'/'.join(rel)}.py imports {module}")
    assert not upward, upward


def test_the_parser_and_help_load_no_deep_learning_library():
    """`nudiff --help`, a subcommand's --help and `experiment --status` parse without torch,
    MONAI or diffusers (seconds, not ten): the stages import them when they run."""
    import subprocess
    import sys

    code = (
        "import sys, nudiff.cli as c; c.build_parser(); "
        "print(sorted({'torch', 'monai', 'diffusers'} & set(sys.modules)))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


def test_lazy_packages_still_export_their_names():
    import nudiff.augment
    import nudiff.diffusion
    import nudiff.experiment
    import nudiff.synthesis

    for package in (nudiff.augment, nudiff.diffusion, nudiff.experiment, nudiff.synthesis):
        for name in package.__all__:
            assert getattr(package, name) is not None, (package.__name__, name)
        assert set(package.__all__) <= set(dir(package)), package.__name__
