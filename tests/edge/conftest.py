"""Put the repository root first on sys.path, so `edge` is the package and not the mirrored `tests/edge` folder.

pytest (prepend import mode) puts `tests/` on sys.path, and `tests/edge/` would then shadow the `edge`
package as a namespace package. (A `pythonpath = ["."]` in the pytest config would make this unnecessary.)
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if sys.path[0] != _ROOT:
    sys.path.insert(0, _ROOT)
