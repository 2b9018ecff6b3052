"""Make `seeds` the package, not the mirrored tests/seeds folder (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if sys.path[0] != _ROOT:
    sys.path.insert(0, _ROOT)
for _name in [m for m in sys.modules if m in ("edge", "seeds") or m.startswith(("edge.", "seeds."))]:
    if getattr(sys.modules[_name], "__file__", None) is None:
        del sys.modules[_name]
