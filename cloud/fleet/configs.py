"""Agent configs in the cloud: validated with the edge's own model (`zhizao edge check-config`), diffed.

The cloud never imports the edge package (DESIGN.md section 1), so validation runs the edge's own checker in
a subprocess of the same installation: what passes here passes `zhizao edge check-config` at the site, with
the same `path: message (value)` problems.
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["ConfigInvalid", "diff", "validate"]

_TIMEOUT_S = 60.0


class ConfigInvalid(ValueError):
    """The config does not pass the edge's checker; `problems` are its `path: message (value)` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def validate(document: str) -> None:
    """Run `zhizao edge check-config` on `document`; ConfigInvalid with its problems when it fails."""
    with tempfile.TemporaryDirectory(prefix="zhizao-config-") as tmp:
        path = Path(tmp) / "agent.yaml"
        path.write_text(document, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k != "ZHIZAO_MQTT_URL"}  # validate the document as written
        try:
            done = subprocess.run([sys.executable, "-m", "zhizao", "edge", "check-config", str(path)],
                                  capture_output=True, text=True, timeout=_TIMEOUT_S, env=env, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise ConfigInvalid([f"(file): the edge's checker did not answer within {_TIMEOUT_S:g} s"]) from None
    if done.returncode == 0:
        return
    problems = [ln.strip() for ln in done.stdout.splitlines() if ln.startswith("  ")]
    raise ConfigInvalid(problems or [(done.stderr or done.stdout).strip()[-500:] or "(file): invalid"])


def diff(old: str | None, new: str, old_label: str, new_label: str) -> str:
    """Unified diff of two config documents."""
    return "".join(difflib.unified_diff((old or "").splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=old_label, tofile=new_label))  # fmt: skip
