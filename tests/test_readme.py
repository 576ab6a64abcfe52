"""Every fenced code block of README.md runs as written.

The blocks run in README order against one private redis-server, as a reader
following the README from the top would: Python blocks as scripts in a
subprocess (``KVCONF_REDIS_URL`` set; once more without it when the block says
it works embedded), shell blocks one command at a time through ``bash`` with
``kvconf`` on the ``PATH`` (this worktree's code), exported variables carried
from one command to the next. A command must exit 0 unless its comment says
``exits N``. A block in any other language, or a command that is neither run
nor in :data:`SKIPPED` (each with its reason), fails the test.

Adapted, never skipped: ``kvconf serve`` lines (also the quick start's, after
its ``pip install``) start in the background with
the same flags on a free loopback port (``--host 0.0.0.0`` becomes
``127.0.0.1``, the compose file's ``redis://redis:6379/0`` the private server,
``/var/lib/kvconf`` a temporary directory) and must answer ``/healthz``; one
whose comment says ``exits N`` must exit N (given ``--host 192.0.2.1``, an
address no machine has, for ``0.0.0.0``: it can never listen). ``curl`` lines
go to the open server (no ``Authorization`` header) or to the one started
with ``KVCONF_ADMIN_TOKEN`` (``localhost:8767`` becomes its address) with
``--fail-with-body`` so an HTTP error fails; ``kvconf watch`` and
``curl -N`` streams are read until their first record, then stopped. A Python
block naming ``http://localhost:8767`` talks to that same server (its address
replaces the name), as the curl lines do; before the REST section starts one,
to the quick start's (whose admin token is given on its line).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from .redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

#: Commands not run, each with why: (regular expression on the command, reason).
SKIPPED: list[tuple[str, str]] = [
    (
        r"^python3 -m pip install (?!.*&& (\w+=\S+ )*kvconf serve)",
        "installs the package (the test runs this worktree's code); the test suite that"
        " follows the install is what runs this test (a `kvconf serve` that follows it runs)",
    ),
    (r"^kvconf bench\b", "takes minutes; tests/test_bench.py runs it with small sizes"),
    (r"--install-completion", "edits the user's shell start-up file"),
]

#: Files the README's commands take as given in the working directory, and
#: what ``key=@-`` reads from standard input.
GIVEN_FILES = {
    "prompt.txt": "You are a helpful configuration assistant.\n",
    "schema.json": (
        '{"keys": {"stale_timeout": {"type": "int", "default": 15, "min": 1, "max": 600},'
        ' "api_key": {"type": "str", "sensitive": true}}}\n'
    ),
    ".env.production": "APP_MODE=careful\nAPP_REGION=eu\n",
    "changes.json": '{"values": {"ai-12": {"retries": 4}, "ai-13": {"region": "eu"}}}\n',
}
STDIN = "s3cret-token\n"

EXIT_NOTE = re.compile(r"#.*\bexits (\d+)\b")


@dataclass
class Block:
    """One fenced block: its language, the README line of its fence, its text."""

    lang: str
    line: int
    text: str


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, in order."""
    found: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^(`{3,})(.*)$", lines[i])
        if fence is None:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].startswith(fence.group(1)):
            body.append(lines[i])
            i += 1
        found.append(Block(fence.group(2).strip(), start + 1, "\n".join(body) + "\n"))
        i += 1
    return found


def shell_commands(block: Block) -> list[tuple[int, str]]:
    """A shell block's commands (continuation lines joined), with README line numbers."""
    commands: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for offset, raw in enumerate(block.text.splitlines(), start=block.line + 1):
        if pending is not None:
            line_no, text = pending
            text = text + " " + raw.strip()
        else:
            line_no, text = offset, raw.strip()
        if text.endswith("\\"):
            pending = (line_no, text[:-1].rstrip())
            continue
        pending = None
        if text and not text.startswith("#"):
            commands.append((line_no, text))
    assert pending is None, f"README.md:{block.line}: a block ends in a continuation line"
    return commands


def watch_started(out: str) -> bool:
    """``kvconf watch --json`` printed its ``ready`` line and a namespace's state."""
    return '"type":"ready"' in out and '"type":"state"' in out


def skip_reason(command: str) -> str | None:
    for pattern, reason in SKIPPED:
        if re.search(pattern, command):
            return reason
    return None


def expected_status(command: str) -> int:
    note = EXIT_NOTE.search(command)
    return int(note.group(1)) if note else 0


@dataclass
class Session:
    """What a reader's terminal holds: environment, directory, servers."""

    cwd: Path
    redis: RedisServer
    env: dict[str, str]
    servers: dict[str, str] = field(default_factory=dict)  # "open"/"auth" -> base URL
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)

    def where(self, line: int) -> str:
        return f"README.md:{line}"

    # -- shell -----------------------------------------------------------------

    def run_shell(self, line: int, command: str) -> None:
        if skip_reason(command) is not None:
            return
        installed = re.match(r"^python3 -m pip install [^&]*&& (.*)$", command)
        if installed:  # the quick start: this worktree's code is installed already
            command = installed.group(1)
        if re.match(r"^(\w+=\S+ )*kvconf serve\b", command):
            self.serve(line, command)
        elif re.match(r"^kvconf watch\b", command):
            self.stream(line, command, first=watch_started)
        elif re.match(r"^curl\b", command):
            self.curl(line, command)
        else:
            self.bash(line, command, expected_status(command))
        self.ran.append(command)
        if os.environ.get("KVCONF_README_TIMING"):
            print(f"{time.monotonic() - self.t0:6.2f}s  README.md:{line}  {command[:70]}")

    def bash(self, line: int, command: str, expected: int) -> str:
        env_file = self.cwd / ".readme-env"
        script = f"set -a\n{command}\n__rc=$?\nenv -0 > {shlex.quote(str(env_file))}\nexit $__rc\n"
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=self.cwd,
            env=self.env,
            input=STDIN.encode() if "@-" in command else b"",
            capture_output=True,
            timeout=60,
        )
        out = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
        assert done.returncode == expected, (
            f"{self.where(line)}: `{command}` exited {done.returncode}, not {expected}:\n{out}"
        )
        if env_file.exists():
            pairs = env_file.read_bytes().decode().split("\0")
            self.env = dict(p.split("=", 1) for p in pairs if "=" in p)
            env_file.unlink()
        return out

    def curl(self, line: int, command: str) -> None:
        server = self.servers["auth" if "Authorization" in command else "open"]
        command = command.replace("http://localhost:8767", server)
        command = command.replace("localhost:8767", server)
        if re.match(r"^curl -N\b", command):
            self.stream(line, command, first=lambda out: "event:" in out)
            return
        self.bash(line, "curl -sS --fail-with-body " + command[len("curl ") :], 0)

    def stream(self, line: int, command: str, first: Callable[[str], bool]) -> None:
        """Run a command that streams forever; wait for its first record, stop it."""
        proc = subprocess.Popen(
            ["bash", "-c", "exec " + command],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        out = ""
        try:
            deadline = time.monotonic() + 20
            assert proc.stdout is not None
            os.set_blocking(proc.stdout.fileno(), False)
            while time.monotonic() < deadline and not first(out):
                chunk = proc.stdout.read()
                if chunk:
                    out += chunk.decode(errors="replace")
                elif proc.poll() is not None:
                    break
                else:
                    time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
        assert first(out), f"{self.where(line)}: `{command}` printed no first record:\n{out}"

    def serve(self, line: int, command: str) -> None:
        expected = expected_status(command)
        port = free_port()
        adapted = command.split("#", 1)[0].strip()
        adapted = adapted.replace("redis://redis:6379/0", self.redis.url)
        adapted = adapted.replace("/var/lib/kvconf", str(self.cwd / "var-lib-kvconf"))
        # Tests listen on loopback only. A line documented to be refused gets a
        # non-loopback address no machine has (TEST-NET-1): the same refusal,
        # and were it not refused, binding fails instead of listening.
        public = "127.0.0.1" if expected == 0 else "192.0.2.1"
        adapted = adapted.replace("--host 0.0.0.0", f"--host {public}")
        adapted += f" --port {port}"
        env = dict(self.env)
        if "--redis-url" not in adapted:
            # "kvconf serve" alone is the embedded store: its own data dir.
            env.pop("KVCONF_REDIS_URL", None)
            env["KVCONF_DATA_DIR"] = str(self.cwd / f"embedded-{port}")
        log = self.cwd / f"serve-{port}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                ["bash", "-c", "exec env " + adapted],
                cwd=self.cwd,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        if expected:
            try:
                status = proc.wait(20)
            finally:
                if proc.poll() is None:
                    proc.kill()
            assert status == expected, (
                f"{self.where(line)}: `{command}` exited {status}:\n{log.read_text()}"
            )
            return
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (
                f"{self.where(line)}: `{adapted}` exited {proc.returncode}:\n{log.read_text()}"
            )
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{self.where(line)}: `{adapted}` never ready"
            time.sleep(0.1)
        kind = "auth" if "KVCONF_ADMIN_TOKEN" in env else "open"
        if re.match(r"^(\w+=\S+ )*KVCONF_ADMIN_TOKEN=", adapted):
            kind = "quickstart"  # its own token, given on the line
        if kind in self.servers:
            # Curl lines talk to the first server of each kind; this one has
            # shown it starts with its flags, and may go.
            proc.terminate()
        else:
            self.servers[kind] = base

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # -- python ----------------------------------------------------------------

    def run_python(self, block: Block) -> None:
        script = self.cwd / f"readme_{block.line}.py"
        text = block.text
        if "http://localhost:8767" in text:  # Store(url, token=...) through a kvconf server
            # The REST section's server once started, else the quick start's.
            server = self.servers.get("auth") or self.servers["quickstart"]
            text = text.replace("http://localhost:8767", server)
        script.write_text(text)
        runs = [self.env]
        if "embedded" in block.text:
            runs.append({k: v for k, v in self.env.items() if k != "KVCONF_REDIS_URL"})
        for env in runs:
            done = subprocess.run(
                [sys.executable, script.name],
                cwd=self.cwd,
                env=env,
                capture_output=True,
                timeout=60,
            )
            mode = "Redis" if "KVCONF_REDIS_URL" in env else "embedded"
            assert done.returncode == 0, (
                f"{self.where(block.line)} ({mode}): exited {done.returncode}:\n"
                + done.stdout.decode(errors="replace")
                + done.stderr.decode(errors="replace")
            )
        self.ran.append(f"python block at line {block.line}")


def kvconf_on_path(directory: Path) -> Path:
    """A ``kvconf`` command running this worktree's code (not an installed copy)."""
    directory.mkdir()
    exe = directory / "kvconf"
    exe.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m kvconf "$@"\n')
    exe.chmod(0o755)
    return directory


@pytest.fixture
def session(redis_server: RedisServer, tmp_path: Path) -> Iterator[Session]:
    work = tmp_path / "work"
    work.mkdir()
    for name, content in GIVEN_FILES.items():
        (work / name).write_text(content)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVCONF_")}
    env.update(
        PATH=f"{kvconf_on_path(tmp_path / 'bin')}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
        HOME=str(tmp_path / "home"),
        KVCONF_REDIS_URL=redis_server.url,
        KVCONF_DATA_DIR=str(tmp_path / "data"),
        COLUMNS="120",
    )
    started = Session(work, redis_server, env)
    try:
        yield started
    finally:
        started.close()


def test_parser_sees_every_block() -> None:
    text = "a\n```python\nx = 1\n```\n```sh\nkvconf get a b \\\n  -o json  # c\n# only\n```\n"
    blocks = readme_blocks(text)
    assert [(b.lang, b.line) for b in blocks] == [("python", 2), ("sh", 5)]
    assert shell_commands(blocks[1]) == [(6, "kvconf get a b -o json  # c")]
    assert watch_started('{"type":"ready"}\n{"type":"state"}\n')
    assert expected_status("kvconf snapshot verify x  # exits 7: damaged") == 7
    assert skip_reason("kvconf bench --json") is not None
    assert skip_reason("kvconf get acme") is None


@pytest.mark.slow
@pytest.mark.timeout(600)  # ~80 commands, each a kvconf process (seconds on a busy machine)
def test_readme_blocks_run_as_written(session: Session) -> None:
    blocks = readme_blocks(README.read_text())
    assert blocks, "README.md has no code blocks"
    for block in blocks:
        if block.lang == "python":
            session.run_python(block)
        elif block.lang == "sh":
            for line, command in shell_commands(block):
                session.run_shell(line, command)
        else:
            pytest.fail(f"README.md:{block.line}: a ```{block.lang} block the test does not run")
    skipped = [c for b in blocks if b.lang == "sh" for _, c in shell_commands(b) if skip_reason(c)]
    # The skip list stays short: each entry is used, and nothing else is skipped.
    assert {skip_reason(c) for c in skipped} == {reason for _, reason in SKIPPED}
