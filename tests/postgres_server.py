"""A real, throwaway PostgreSQL server for the tests (the ``postgres_server`` / ``postgres_url`` fixtures).

``initdb`` + ``pg_ctl`` from the PATH (or Debian's ``/usr/lib/postgresql/*/bin``) create a
cluster in a fresh folder under the system temp dir and start it on a unix socket only
(``listen_addresses=''``: nothing on the network). The server refuses to run as root, so as
root every PostgreSQL binary runs as the ``postgres`` system user (``runuser``) and the folder
is handed to that user. Trust authentication (a socket in a private folder) and ``fsync=off``
(a test cluster is thrown away; durability would only slow the tests) are test settings, not
advice for a real server.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

#: The port only names the socket file (``.s.PGSQL.<port>``) in our own folder: no clash possible.
PORT = 5432
SUPERUSER = "postgres"


def find_bin(name: str) -> str | None:
    """The PostgreSQL program ``name`` on the PATH, else in Debian's versioned folder, else None."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def missing_reason() -> str | None:
    """Why no server can be started here (the skip reason), or None when ``initdb`` exists."""
    if find_bin("initdb") is None or find_bin("pg_ctl") is None:
        return ("no PostgreSQL server binaries (initdb, pg_ctl) on the PATH or in /usr/lib/postgresql/*/bin: "
                "install PostgreSQL (e.g. apt-get install postgresql) to run the PostgreSQL tests")
    return None


class PostgresServer:
    """One PostgreSQL cluster in its own folder; ``start()``, ``new_database()``, ``stop()``."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="merx-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log = self.root / "server.log"
        self._as_user: list[str] = []
        self._owner: tuple[int, int] | None = None
        self._counter = itertools.count(1)
        self.running = False

    # -- running the binaries -------------------------------------------------------------------

    def _prepare_user(self) -> None:
        if os.geteuid() != 0:
            return  # an ordinary user runs the server as itself
        try:
            user = pwd.getpwnam(SUPERUSER)
        except KeyError:
            raise RuntimeError("running as root, and PostgreSQL refuses to: a 'postgres' system user is needed "
                               "to run the test server (useradd --system postgres)") from None
        runuser = shutil.which("runuser")
        if runuser is None:
            raise RuntimeError("running as root without runuser(1): cannot start PostgreSQL as 'postgres'")
        self._as_user = [runuser, "-u", SUPERUSER, "--"]
        self._owner = (user.pw_uid, user.pw_gid)
        # mkdtemp's folder is 0700 root: the server must own it (and /tmp above it is world-traversable).
        os.chown(self.root, *self._owner)

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess:
        cmd = [*self._as_user, find_bin(program) or program, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}\n{log}")
        return proc

    def _mkdir(self, path: Path) -> None:
        path.mkdir(mode=0o700)
        if self._owner is not None:
            os.chown(path, *self._owner)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> PostgresServer:
        self._prepare_user()
        self._mkdir(self.socket_dir)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", SUPERUSER, "-E", "UTF8", "--locale=C",
                  "--no-sync")
        return self.start_again()

    def start_again(self) -> PostgresServer:
        """Start the server of an existing cluster (after ``start``; a test may stop it in between)."""
        options = (f"-p {PORT} -k {self.socket_dir} -c listen_addresses='' -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "-t", "60", "start")
        self.running = True
        return self

    def stop(self) -> None:
        if self.running:
            try:
                # immediate: the cluster is thrown away, there is nothing to shut down cleanly for.
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            finally:
                self.running = False
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases ------------------------------------------------------------------------------

    def url(self, database: str = "postgres", driver: str = "psycopg") -> str:
        """The SQLAlchemy URL of ``database`` on this server, through its unix socket."""
        return f"postgresql+{driver}://{SUPERUSER}@/{database}?host={self.socket_dir}&port={PORT}"

    def admin(self, sql: str) -> None:
        """Run ``sql`` on the ``postgres`` database outside a transaction (CREATE/DROP DATABASE)."""
        import psycopg

        with psycopg.connect(host=str(self.socket_dir), port=PORT, user=SUPERUSER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(sql)

    def new_database(self) -> str:
        """Create an empty database; returns its name."""
        name = f"merx_test_{os.getpid()}_{next(self._counter)}"
        self.admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        # FORCE: a test may leave an engine with open connections behind.
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
