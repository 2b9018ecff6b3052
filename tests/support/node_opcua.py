"""A node-opcua (npm) PLC-like server for tests against an OPC UA stack nobody here wrote.

The npm package is installed once per version into ~/.cache/zhizao-tests/ (override with
ZHIZAO_TEST_NPM_CACHE); a machine without node or npm fails the test with what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import IO

SERVER_DIR = Path(__file__).resolve().parents[1] / "edge" / "adapters" / "opcua" / "node_opcua"


def install() -> Path:
    """The folder with node_modules/node-opcua (installed on first use) and the server script."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise RuntimeError("node and npm are needed for the node-opcua tests: apt-get install -y nodejs npm")
    package = (SERVER_DIR / "package.json").read_text(encoding="utf-8")
    version = package.split('"node-opcua": "')[1].split('"')[0]
    root = Path(os.environ.get("ZHIZAO_TEST_NPM_CACHE", Path.home() / ".cache" / "zhizao-tests"))
    target = root / f"node-opcua-{version}"
    if not (target / "node_modules" / "node-opcua" / "package.json").exists():
        target.mkdir(parents=True, exist_ok=True)
        (target / "package.json").write_text(package, encoding="utf-8")
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=target, check=True,
                       timeout=600)
    shutil.copy(SERVER_DIR / "plc_server.js", target / "plc_server.js")
    return target


class NodeOpcUaPlc:
    """`plc_server.js` in a child process: `endpoint` once it listens, `go()` starts the value sequence."""

    def __init__(self, port: int, pki: Path, limit: int = 100, ticks: int = 5) -> None:
        where = install()
        self.pki = pki
        self.proc = subprocess.Popen(
            ["node", "plc_server.js", str(port), str(pki), str(limit), str(ticks)], cwd=where,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self._stdin: IO[str] = self.proc.stdin
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._done = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()
        if not self._ready.wait(60):
            self.close()
            raise RuntimeError("node-opcua server did not start:\n" + "\n".join(self.lines[-20:]))
        ready = next(line for line in self.lines if line.startswith("READY "))
        self.variables = int(ready.split()[2])
        self.endpoint = f"opc.tcp://127.0.0.1:{port}/plc"

    def _read(self, out: IO[str]) -> None:
        with out:
            for line in out:
                self.lines.append(line.rstrip())
                if line.startswith("READY "):
                    self._ready.set()
                elif line.startswith("DONE"):
                    self._done.set()

    def go(self) -> None:
        """Start the value sequence of the process variables."""
        self._stdin.write("go\n")
        self._stdin.flush()

    def wait_done(self, timeout: float = 30) -> None:
        assert self._done.wait(timeout), "node-opcua server did not finish its value sequence"

    def trust_rejected(self) -> int:
        """What an engineer does on the PLC: move the client certificates it rejected into its trust list."""
        trusted = self.pki / "trusted" / "certs"
        trusted.mkdir(parents=True, exist_ok=True)
        moved = 0
        for cert in (self.pki / "rejected").glob("*"):
            cert.rename(trusted / cert.name)
            moved += 1
        return moved

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._stdin.close()
        self._reader.join(5)
