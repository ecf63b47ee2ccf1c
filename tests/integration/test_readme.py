"""The README's commands, run verbatim and in order, as a newcomer runs them.

Every ```sh and ```python block of README.md runs, unedited, in one bash session (so `source`,
`export` and `cd` carry from block to block, as in the newcomer's terminal), against a fresh
server on a free port started as `make serve` starts it: no admin key given, so its first start
makes one and writes the `lamina` AWS profile into a fresh temporary HOME, with that server's
endpoint. The session starts in an empty working directory that, like a checkout after
`make serve`, holds `.venv` (a link to the virtualenv running the tests), with a fresh
machine's PATH and no AWS or Lamina variables. The only thing adjusted is the port, through the
environment: the profile carries it for the AWS tools, `LAMINA_ENDPOINT` for the `lamina`
command. Python blocks run with the session's `python` (the activated venv's).

A comment right before a block directs the test:
`<!-- doctest: skip (why) -->` leaves it out (it starts a server or runs forever), and
`<!-- doctest: expect TEXT -->` requires TEXT in what the block printed.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.conftest import Server

README = Path(__file__).resolve().parents[2] / "README.md"

#: a fresh machine's PATH: the README must get `lamina`, `aws` and boto3's Python on it itself
FRESH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_DIRECTIVE = re.compile(r"<!--\s*doctest:\s*(skip|expect)\b\s*(.*?)\s*-->", re.DOTALL)
_MARK = "__README_DOCTEST_BLOCK__"


@dataclass(frozen=True)
class Block:
    """One fenced block of the README that the test runs."""

    index: int
    lang: str
    text: str
    skip: bool
    expect: str | None

    @property
    def title(self) -> str:
        first = self.text.strip().splitlines()[0]
        return f"block {self.index} ({self.lang}: {first!r})"


def _directive(before: str) -> tuple[str | None, str]:
    """The doctest directive in the comment that ends `before` (the text up to a block)."""
    tail = before.rstrip()
    if not tail.endswith("-->"):
        return None, ""
    found = _DIRECTIVE.fullmatch(tail[tail.rfind("<!--") :])
    return (found.group(1), found.group(2)) if found else (None, "")


def readme_blocks(markdown: str) -> list[Block]:
    """The README's sh and python blocks, in order, each with the directive before it."""
    blocks: list[Block] = []
    for match in _FENCE.finditer(markdown):
        lang, text = match.group(1), match.group(2)
        if lang not in ("sh", "python"):
            continue
        kind, arg = _directive(markdown[: match.start()])
        blocks.append(
            Block(
                index=len(blocks),
                lang=lang,
                text=text,
                skip=kind == "skip",
                expect=arg if kind == "expect" else None,
            )
        )
    return blocks


def session_script(blocks: list[Block]) -> str:
    """One bash script running `blocks` in order, each announced by a marker line; it stops
    at the first command that fails."""
    lines = ["set -eo pipefail"]
    for block in blocks:
        if block.skip:
            continue
        # on a line of its own even after output without a final newline (`cat out.json`)
        lines.append(f"printf '\\n{_MARK}{block.index}\\n'")
        if block.lang == "python":
            assert "__README_PY__" not in block.text
            lines += ["python - <<'__README_PY__'", block.text.rstrip("\n"), "__README_PY__"]
        else:
            lines.append(block.text.rstrip("\n"))
    lines.append(f"printf '\\n{_MARK}end\\n'")
    return "\n".join(lines) + "\n"


def split_output(output: str) -> dict[str, str]:
    """What each block printed, by block index ("end" once the script got through)."""
    parts: dict[str, str] = {}
    current: str | None = None
    for line in output.splitlines(keepends=True):
        if line.startswith(_MARK):
            current = line[len(_MARK) :].strip()
            parts[current] = ""
        elif current is not None:
            parts[current] += line
    return parts


@contextlib.contextmanager
def newcomer_home(home: Path) -> Iterator[None]:
    """The test process's environment as a new user's while a server is started from it:
    HOME is `home`, and no AWS file locations (the conftest points those elsewhere)."""
    saved = dict(os.environ)
    os.environ["HOME"] = str(home)
    for var in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "LAMINA_ADMIN_KEY"):
        os.environ.pop(var, None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_readme_blocks_parse() -> None:
    """The parser finds what the README holds, so the run below cannot pass by finding
    nothing: set-up skipped, the AWS CLI, boto3 and `lamina` blocks run, with expectations."""
    blocks = readme_blocks(README.read_text())
    skipped = [b for b in blocks if b.skip]
    run = [b for b in blocks if not b.skip]
    # Skipped: the set-up, and the cluster's nodes (they need PostgreSQL and NATS: the same
    # `lamina serve --cluster` lines run in tests/cluster against engines the tests start).
    assert skipped and all(
        "make serve" in b.text or "make test" in b.text or "lamina serve --cluster" in b.text
        for b in skipped
    )
    assert len(run) >= 5
    assert any(b.lang == "python" for b in run)
    text = "".join(b.text for b in run)
    for tool in ("source .venv/bin/activate", "aws lambda invoke", "lamina invoke", "curl"):
        assert tool in text
    assert sum(b.expect is not None for b in run) >= 3


def test_readme_runs_verbatim(tmp_path: Path) -> None:
    venv = Path(sys.prefix)
    assert (venv / "bin" / "activate").exists(), f"tests must run from a virtualenv ({venv})"
    blocks = readme_blocks(README.read_text())

    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (work / ".venv").symlink_to(venv)
    # `--auth on` keeps conftest from giving the server an admin key: it makes its own and
    # writes the `lamina` profile (with this server's endpoint) into `home`, as `make serve`.
    with newcomer_home(home):
        # `--sandbox auto`, as `make serve` starts it, on the process pass too: the README's
        # container image needs the namespace sandbox.
        server = Server(
            data_dir=tmp_path / "data", extra_args=("--auth", "on", "--sandbox", "auto")
        ).start()
    try:
        config = (home / ".aws" / "config").read_text()
        assert f"endpoint_url = {server.endpoint}" in config, config
        env = {
            "HOME": str(home),
            "PATH": FRESH_PATH,
            "LANG": "C.UTF-8",
            "AWS_EC2_METADATA_DISABLED": "true",
            "LAMINA_ENDPOINT": server.endpoint,
        }
        done = subprocess.run(
            ["bash", "-c", session_script(blocks)],
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,
        )
    finally:
        assert server.stop() == 0, server.log()

    printed = split_output(done.stdout)
    ran = [b for b in blocks if not b.skip]
    failed = next((b for b in reversed(ran) if str(b.index) in printed), None)
    assert done.returncode == 0 and "end" in printed, (
        f"{failed.title if failed else 'the first block'} failed (exit {done.returncode}):\n"
        f"{done.stdout[-4000:]}\nserver log:\n{server.log()[-2000:]}"
    )
    for block in ran:
        if block.expect is not None:
            assert block.expect in printed[str(block.index)], (
                f"{block.title} did not print {block.expect!r}:\n{printed[str(block.index)]}"
            )


@pytest.mark.parametrize(
    ("directive", "skip", "expect"),
    [
        ("<!-- doctest: skip (starts a server) -->", True, None),
        ('<!-- doctest: expect "greeting": "hello" -->', False, '"greeting": "hello"'),
        ("<!-- a comment of another kind -->", False, None),
    ],
)
def test_directives(directive: str, skip: bool, expect: str | None) -> None:
    """A directive applies to the block right after it only; other fences are not run."""
    markdown = (
        "<!-- doctest: skip -->\n```sh\nmake serve\n```\n\ntext\n\n"
        f"{directive}\n```sh\necho hi\n```\n\n```json\n{{}}\n```\n\n```sh\necho 2\n```\n"
    )
    first, block, last = readme_blocks(markdown)
    assert first.skip and first.text == "make serve\n"
    assert (block.skip, block.expect, block.text) == (skip, expect, "echo hi\n")
    assert (last.skip, last.expect) == (False, None)
