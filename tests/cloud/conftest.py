"""Put the repository root first on sys.path, so `cloud` is the package and not the mirrored `tests/cloud` folder.

pytest (prepend import mode) puts `tests/` on sys.path; `tests/cloud/` then shadows the `cloud` package as a
namespace package. A `pythonpath = ["."]` in the pytest config would make this file unnecessary.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if sys.path[0] != _ROOT:
    sys.path.insert(0, _ROOT)
for _name in [m for m, mod in sys.modules.items() if m.split(".")[0] == "cloud" and getattr(mod, "__file__", 1) is None]:
    del sys.modules[_name]  # a namespace stand-in imported before this file ran
