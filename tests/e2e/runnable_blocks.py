"""The runnable code blocks of Markdown pages, and running them in order as one session.

A fenced ``python`` or ``bash`` block is runnable when the line right above its fence is
``<!-- runnable -->`` (invisible on the rendered page). The blocks of one page share state: Python
blocks run in one namespace, and variables a bash block exports are seen by the blocks after it.
Uniquely named so that other tests (the README's examples) can import it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MARKER = "<!-- runnable -->"
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<lang>[a-z]+)?[^\n]*$")


@dataclass(frozen=True)
class Block:
    """One runnable block: its language, code, and the file and line of its opening fence."""

    lang: str
    code: str
    where: str


def runnable_blocks(path: Path) -> list[Block]:
    """Every runnable block of a Markdown file, in order. A marker not followed by a fenced python or
    bash block is an error (a typo would silently stop an example from running)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        fence = _FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
        if not fence or fence["lang"] not in {"python", "bash"}:
            raise ValueError(f"{path}:{i + 1}: {MARKER} must be followed by a ```python or ```bash fence")
        indent, closing = len(fence["indent"]), fence["fence"]
        body: list[str] = []
        for j in range(i + 2, len(lines)):
            if lines[j].strip() == closing:
                break
            body.append(lines[j][indent:])
        else:
            raise ValueError(f"{path}:{i + 2}: the runnable block is never closed")
        out.append(Block(fence["lang"], "\n".join(body) + "\n", f"{path}:{i + 2}"))
    return out


class Session:
    """Runs the blocks of one page: Python in one namespace in this process, bash in a subprocess whose
    exported variables carry over. ``replace`` maps text in the blocks to what it stands for here (the
    documented default URL and data directory to the test registry's)."""

    def __init__(self, env: Mapping[str, str], cwd: Path, replace: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.cwd = cwd
        self.replace = dict(replace)
        self.namespace: dict[str, object] = {"__name__": "__docs__"}

    def _code(self, block: Block) -> str:
        code = block.code
        for old, new in self.replace.items():
            code = code.replace(old, new)
        return code

    def run(self, block: Block) -> None:
        """Run one block; a failure raises AssertionError naming the block and what it printed."""
        code = self._code(block)
        if block.lang == "bash":
            self._bash(code, block.where)
        else:
            self._python(code, block.where)

    def _bash(self, code: str, where: str) -> None:
        with tempfile.NamedTemporaryFile(suffix=".env", delete=False) as f:
            env_file = Path(f.name)
        try:
            script = f"set -euo pipefail\n{code}\nenv -0 > {env_file}\n"
            done = subprocess.run(["bash", "-c", script], cwd=self.cwd, env=self.env, capture_output=True,
                                  text=True, timeout=600)
            assert done.returncode == 0, f"{where}: the bash block failed ({done.returncode}):\n{done.stdout}" \
                                         f"\n{done.stderr}"
            pairs = (item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
            self.env = {k: v for k, v in pairs if not k.startswith("BASH_FUNC_") and k not in {"_", "SHLVL"}}
        finally:
            env_file.unlink(missing_ok=True)

    def _python(self, code: str, where: str) -> None:
        saved_env, saved_cwd = dict(os.environ), Path.cwd()
        os.environ.clear()
        os.environ.update(self.env)
        os.chdir(self.cwd)
        try:
            exec(compile(code, where, "exec"), self.namespace)  # the documentation's own code
        except Exception as exc:
            raise AssertionError(f"{where}: the python block raised {type(exc).__name__}: {exc}") from exc
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
            os.chdir(saved_cwd)


def session_env(base: Mapping[str, str], home: Path) -> dict[str, str]:
    """``base`` with this interpreter's scripts first on PATH (``python``, ``adapters``,
    ``adapter-registry``) and the client's login file and cache under ``home``."""
    bindir = str(Path(sys.executable).parent)
    return {**base, "PATH": bindir + os.pathsep + base.get("PATH", ""), "HOME": str(home),
            "ADAPTER_REGISTRY_CONFIG": str(home / "config.json"), "ADAPTER_REGISTRY_CACHE": str(home / "cache")}
