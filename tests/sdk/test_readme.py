"""The README stays true without a registry: every Python block parses, every ``sdk.…`` name it (or a
docs page) uses
exists (top-level ones are in ``sdk.__all__``), and its Layout section names only files that exist in the
repository. ``tests/e2e/test_readme_examples.py`` runs the marked examples against a live registry."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import sdk

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
#: The README and the documentation pages (where the README's longer sections moved).
TEXTS = README + "".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").rglob("*.md")))
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.M | re.S)
#: Sub-packages reached through ``sdk.<name>`` (imported on first use, not re-exported names).
SUBPACKAGES = {"client", "integrations", "merging", "cli"}


def blocks(language: str) -> list[str]:
    return [code for lang, code in FENCE.findall(README) if lang == language]


def test_every_python_block_parses() -> None:
    found = blocks("python")
    assert len(found) >= 2
    for code in found:
        ast.parse(code)


def _resolve(dotted: str) -> object:
    obj: object = sdk
    path = "sdk"
    for part in dotted.split("."):
        path += "." + part
        if not hasattr(obj, part):
            importlib.import_module(path)
        obj = getattr(obj, part)
    return obj


def test_every_sdk_name_the_readme_uses_exists_and_top_level_ones_are_exported() -> None:
    names = set(re.findall(r"(?<![\w/.-])sdk\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)", TEXTS))
    assert {"Client", "push", "pull", "AdapterModel.from_pretrained"} <= names
    missing = []
    for dotted in sorted(n for n in names if not n.startswith("__")):  # sdk.__all__ itself
        top = dotted.split(".")[0]
        if top not in sdk.__all__ and top not in SUBPACKAGES and not (ROOT / "sdk" / f"{top}.py").is_file():
            missing.append(f"sdk.{dotted}: {top} is not in sdk.__all__")
            continue
        try:
            _resolve(dotted)
        except (AttributeError, ImportError) as exc:
            missing.append(f"sdk.{dotted}: {exc}")
    assert not missing, missing


def test_sdk_all_is_complete_and_every_name_imports() -> None:
    assert sorted(sdk.__all__) == sdk.__all__ and len(set(sdk.__all__)) == len(sdk.__all__)
    for name in sdk.__all__:
        assert getattr(sdk, name) is not None
    public = {n for n, v in vars(sdk).items() if not n.startswith("_") and not isinstance(v, type(sdk))
              and getattr(v, "__module__", "").startswith("sdk")}
    assert public <= set(sdk.__all__), public - set(sdk.__all__)


def layout_paths() -> list[str]:
    """The paths of the Layout section's tree (names sit in the first 30 columns, nested by two spaces)."""
    section = README[README.index("## Layout"):]
    tree = FENCE.search(section) or re.search(r"^```\n(.*?)^```", section, re.M | re.S)
    assert tree is not None
    body = tree.group(tree.lastindex or 1)
    paths, stack = [], []
    for line in body.splitlines():
        column = line[:30]
        if not column.strip():
            continue  # a description carried over to the next line
        level = (len(column) - len(column.lstrip(" "))) // 2
        stack = stack[:level]
        names = [n.strip() for n in column.strip().split("·")]
        paths += ["".join(stack) + n for n in names if "<" not in n]
        if names[-1].endswith("/"):
            stack.append(names[-1])
    return paths


def test_the_layout_section_names_only_files_in_the_repository() -> None:
    paths = layout_paths()
    assert "sdk/model.py" in paths and "registry_service/web/" in paths and len(paths) > 60
    root = ROOT.resolve()
    for path in paths:
        target = (ROOT / path).resolve()
        assert target.is_relative_to(root), f"{path} points outside the repository"
        found = any(ROOT.glob(path.rstrip("/"))) if "*" in path else target.exists()
        assert found, f"the Layout section names {path}, which does not exist"
    section = README[README.index("## Layout"):]
    assert not re.search(r"\.\./|(?<![\w.])/(?:work|home|tmp|usr)/", section), "a path outside the repository"
