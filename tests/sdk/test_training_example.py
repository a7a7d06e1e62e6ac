"""The drug-review fine-tuning example runs end to end in a short mode (so it cannot rot)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_drugreview_example_runs_in_short_mode(tmp_path: Path) -> None:
    out = tmp_path / "numbers.json"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "finetune_drugreview.py"), "--max-steps", "2", "--limit", "16",
         "--eval-limit", "16", "--batch-size", "8", "--max-length", "48", "--output-dir", str(tmp_path / "run"),
         "--json", str(out), "--quiet"],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    numbers = json.loads(out.read_text())
    assert numbers["steps"] == 2 and numbers["train_examples"] == 16 and numbers["test_examples"] == 16
    assert 0.0 <= numbers["before"]["accuracy"] <= 1.0 and 0.0 <= numbers["after"]["accuracy"] <= 1.0
    assert "accuracy" in proc.stdout and "before training" in proc.stdout
    saved = Path(numbers["checkpoint"])
    assert json.loads((saved / "adapter_config.json").read_text())["modules_to_save"] == ["classifier", "pooler"]
