"""Put the repository root first on sys.path, so `edge` is the package and not the mirrored `tests/edge` folder.

pytest (prepend import mode) puts `tests/` on sys.path; `tests/edge/` then shadows the `edge` package as a
namespace package. A `pythonpath = ["."]` in the pytest config would make this file unnecessary.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[3])
if sys.path[0] != _ROOT:
    sys.path.insert(0, _ROOT)

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(1, _HERE)  # the helper modules next to this file (spb_capture, fake_broker)
