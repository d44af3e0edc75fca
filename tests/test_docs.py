"""The documentation holds together: the README stays short, every relative link resolves, and
``benchmarks/README.md`` names every benchmark script and every committed result."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BENCHMARKS = ROOT / "benchmarks"
BENCH_INDEX = BENCHMARKS / "README.md"
RESULTS = BENCHMARKS / "results"
README_MAX_LINES = 300
INDEXED_SUFFIXES = {".md", ".json", ".png"}

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
# [text](target) and ![alt](target); the target may carry a "title" or be in <angle brackets>
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)  # http:, https:, mailto:, ...


def doc_files() -> list[Path]:
    """The markdown files whose links are checked: README, docs/*.md, benchmarks/README.md."""
    return [README, *sorted((ROOT / "docs").glob("*.md")), BENCH_INDEX]


def link_targets(markdown: str) -> list[str]:
    """Targets of the inline links and images of ``markdown``, code blocks and spans left out."""
    text = _CODE_SPAN.sub("", _FENCE.sub("", markdown))
    return [m.group(1).strip("<>") for m in _LINK.finditer(text)]


def broken_links(path: Path) -> list[str]:
    """Relative link targets of ``path`` (fragment stripped) that name no existing file or folder.

    External links (http, https, mailto, ...) and pure ``#anchors`` are not checked.
    """
    broken = []
    for target in link_targets(path.read_text(encoding="utf-8")):
        if _EXTERNAL.match(target) or target.startswith("#"):
            continue
        relative = target.split("#", 1)[0].split("?", 1)[0]
        if not relative or not (path.parent / relative).exists():
            broken.append(target)
    return broken


def named_entries(markdown: str) -> set[str]:
    """Names a markdown text gives to files: its link targets and code spans, each reduced to its
    path relative to ``benchmarks/`` (``results/x/README.md`` also names ``results/x``)."""
    names = set(link_targets(markdown))
    names |= {m.group(2).strip() for m in _CODE_SPAN.finditer(markdown)}
    reduced = set()
    for name in names:
        name = name.split("#", 1)[0].strip().rstrip("/")
        for prefix in ("./", "../benchmarks/", "benchmarks/"):
            if name.startswith(prefix):
                name = name[len(prefix) :]
        if not name:
            continue
        reduced.add(name)
        parts = name.split("/")
        if parts[0] == "results" and len(parts) > 2:
            reduced.add("/".join(parts[:2]))
    return reduced


def unindexed(entries: list[str], markdown: str) -> list[str]:
    """The entries (paths relative to ``benchmarks/``) that ``markdown`` does not name."""
    named = named_entries(markdown)
    return [entry for entry in entries if entry not in named]


def result_entries() -> list[str]:
    """Folders and .md/.json/.png files directly under ``benchmarks/results/``."""
    return sorted(
        f"results/{p.name}"
        for p in RESULTS.iterdir()
        if p.is_dir() or p.suffix in INDEXED_SUFFIXES
    )


def script_entries() -> list[str]:
    return sorted(p.name for p in BENCHMARKS.glob("*.py"))


# --- the repository's documents ---------------------------------------------------------------


def test_readme_is_short():
    n_lines = len(README.read_text(encoding="utf-8").splitlines())
    assert n_lines <= README_MAX_LINES, (
        f"README.md has {n_lines} lines (at most {README_MAX_LINES}): move reference text to docs/"
    )


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path):
    assert path.exists(), f"{path.relative_to(ROOT)} is missing"
    assert broken_links(path) == [], f"{path.relative_to(ROOT)}: links to missing files"


def test_every_result_is_indexed():
    missing = unindexed(result_entries(), BENCH_INDEX.read_text(encoding="utf-8"))
    assert missing == [], f"benchmarks/README.md does not name: {missing} (add a row each)"


def test_every_script_is_indexed():
    missing = unindexed(script_entries(), BENCH_INDEX.read_text(encoding="utf-8"))
    assert missing == [], f"benchmarks/README.md does not name: {missing} (add a row each)"


def test_readme_starts_with_the_two_entry_points():
    """`make run` and `make test` are the first two commands a newcomer meets."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.DOTALL)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert [c for c in commands if c][:2] == ["make run", "make test"]


# --- the checks themselves can fail ------------------------------------------------------------


def test_broken_link_is_reported(tmp_path: Path):
    (tmp_path / "there.md").write_text("x")
    (tmp_path / "dir").mkdir()
    doc = tmp_path / "doc.md"
    doc.write_text(
        "[ok](there.md) [ok](there.md#part) [dir](dir/) ![img](missing.png)\n"
        "[web](https://example.org/x) [mail](mailto:a@b.c) [anchor](#top) [gone](gone.md#x)\n"
        "`[in code](nowhere.md)`\n```\n[in a block](nowhere.md)\n```\n"
    )
    assert broken_links(doc) == ["missing.png", "gone.md#x"]


def test_unnamed_entries_are_reported():
    markdown = (
        "| [demo/](results/demo/) | ... |\n"
        "| `results/kumar-grid-paste` | see [README](results/kumar-grid-subset/README.md) |\n"
        "| [a.md](results/a.md) | `learning_curve.py` |\n"
        "prose that mentions kumar-grid and b.json without naming them\n"
    )
    entries = [
        "results/demo",
        "results/kumar-grid-paste",
        "results/kumar-grid-subset",
        "results/a.md",
        "results/kumar-grid",
        "results/b.json",
        "learning_curve.py",
        "pair_use.py",
    ]
    assert unindexed(entries, markdown) == ["results/kumar-grid", "results/b.json", "pair_use.py"]


def _own_data_commands() -> list[str]:
    """The README's own-data chain: every `nudiff` line between its two markers, in order."""
    text = (ROOT / "README.md").read_text()
    start, end = (
        text.index("<!-- own-data chain"),
        text.index("<!-- end of the own-data chain -->"),
    )
    lines = [ln.split("  #")[0].strip() for ln in text[start:end].splitlines()]
    return [ln for ln in lines if ln.startswith("nudiff ")]


def test_the_own_data_chain_is_the_commands_users_meet():
    commands = _own_data_commands()
    assert commands[0].startswith("nudiff augment my_labels --out")
    assert len(commands) == 9 and commands[-1].startswith("nudiff evaluate")


@pytest.mark.slow
def test_the_readme_own_data_chain_runs_as_written(tmp_path, monkeypatch):
    """Each command of the README's own-data chain, in order, on a tiny labeled folder with tiny
    budgets (configs/augment.yaml swapped for a tiny config, -n 64 for -n 4): the docs cannot
    drift from the CLI."""
    import shlex

    import yaml
    from test_end_to_end import TINY, _dataset

    from nudiff.cli import main

    tiny = {k: v for k, v in TINY.items() if k in ("data", "image", "segment")}
    tiny["synthesis"] = TINY["synthesis"] | {
        "structures": "copypaste",
        "filter": TINY["synthesis"]["filter"] | {"segmenter": "real", "keep_top": 0.5},
    }
    tiny["experiment"] = {"n_synthetic": 4}
    # whole 128-px images as patches: the shipped image model's windows (64 px at scale 0.5)
    tiny["data"] = TINY["data"] | {"patch_size": 128, "stride": 128}
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "augment.yaml").write_text(yaml.safe_dump(tiny))
    _dataset(tmp_path / "my_labels", n=6)
    monkeypatch.chdir(tmp_path)
    for command in _own_data_commands():
        args = shlex.split(command.replace("-n 64", "-n 4"))[1:]
        if args[0] == "augment":  # the shipped image model, fine-tuned 2 steps
            args += ["--config", "configs/augment.yaml", "--set", "image.train.steps=2"]
            args += ["--set", "image.train.warmup_steps=1"]
        assert main(args) == 0, command
    assert (tmp_path / "runs" / "mine" / "segmenter" / "model.safetensors").is_file()
    assert (tmp_path / "runs" / "eval" / "metrics.json").is_file()
