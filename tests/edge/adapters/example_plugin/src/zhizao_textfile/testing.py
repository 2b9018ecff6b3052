"""The conformance harness of the text-file adapter: a temporary file that `poke()` rewrites."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from zhizao.edge.samples import Signal, SignalTable
from zhizao_textfile.config import TextFileConfig


class TextFileHarness:
    """Two machines: press-m01 (temperature, count) and press-m02 (temperature), in one file."""

    def __init__(self) -> None:
        self.dir: Path | None = None
        self.pokes = 0

    def _path(self, name: str) -> Path:
        if self.dir is None:
            raise RuntimeError("TextFileHarness: start() it first")
        return self.dir / name

    def _write(self) -> None:
        text = f"temperature-1 {20.0 + self.pokes}\ncount-1 {7 + self.pokes}\ntemperature-2 21.5\n"
        tmp = self._path("device.txt.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self._path("device.txt"))  # atomic, as a careful device writes it

    def start(self) -> None:
        """Create the device file."""
        self.dir = Path(tempfile.mkdtemp(prefix="zhizao-textfile-"))
        self._write()

    def stop(self) -> None:
        """Remove the device file."""
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    @property
    def config(self) -> TextFileConfig:
        """Reads the device file every 20 ms."""
        return TextFileConfig(type="textfile", name="press", path=self._path("device.txt"), interval_ms=20)

    @property
    def unreachable(self) -> TextFileConfig:
        """A file that does not exist."""
        return TextFileConfig(type="textfile", name="press", path=self._path("gone.txt"), interval_ms=20)

    @property
    def sources(self) -> SignalTable:
        """The three keys of the file."""
        return SignalTable([Signal("press-m01", "temperature-1", 10), Signal("press-m01", "count-1", 3),
                            Signal("press-m02", "temperature-2", 10)])

    async def poke(self) -> None:
        """The device writes new values for press-m01."""
        self.pokes += 1
        self._write()
