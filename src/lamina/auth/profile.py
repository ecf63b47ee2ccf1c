"""The admin key at start, and the `lamina` AWS profile that lets the usual tools use it.

On the first start (no admin key stored), `lamina serve` makes one and writes the profile
`lamina` into the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
`~/.aws/credentials`) and the config file (`AWS_CONFIG_FILE`, else `~/.aws/config`:
`[profile lamina]` with `region` and `endpoint_url`, which boto3 and AWS CLI v1 and v2 honour),
then says how to use it, once. Other profiles in those files are left as they are: only the
`lamina` section is replaced (files are 0600).

With `--admin-key AKID:SECRET` (or `LAMINA_ADMIN_KEY`) that key replaces the stored admin key,
and no profile is written unless `--write-profile` asks: automation has its own credentials.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from lamina.auth.keys import ADMIN_NAME, KeyStore
from lamina.settings import Settings

PROFILE = "lamina"


def credentials_file() -> Path:
    env = os.environ.get("AWS_SHARED_CREDENTIALS_FILE")
    return Path(env).expanduser() if env else Path.home() / ".aws" / "credentials"


def config_file() -> Path:
    env = os.environ.get("AWS_CONFIG_FILE")
    return Path(env).expanduser() if env else Path.home() / ".aws" / "config"


def _replace_section(text: str, header: str, body: list[str]) -> str:
    """`text` (an INI file) with section `header` replaced by `body`, or it appended."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines():
        if re.fullmatch(r"\s*\[[^\]]*\]\s*(#.*|;.*)?", line):
            skipping = line.strip().startswith(f"[{header}]")
            if skipping:
                continue
        if not skipping:
            out.append(line)
    while out and not out[-1].strip():
        out.pop()
    if out:
        out.append("")
    out += [f"[{header}]", *body]
    return "\n".join(out) + "\n"


def _write_private(path: Path, header: str, body: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    old = path.read_text() if path.exists() else ""
    new = _replace_section(old, header, body)
    tmp = path.with_name(path.name + ".lamina-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(new)
    os.replace(tmp, path)


def write_profile(key_id: str, secret: str, region: str, endpoint: str) -> tuple[Path, Path]:
    """Write (or rewrite) the `lamina` profile; returns the credentials and config files."""
    creds, config = credentials_file(), config_file()
    _write_private(
        creds, PROFILE, [f"aws_access_key_id = {key_id}", f"aws_secret_access_key = {secret}"]
    )
    _write_private(
        config, f"profile {PROFILE}", [f"region = {region}", f"endpoint_url = {endpoint}"]
    )
    return creds, config


def setup_admin_key(
    keys: KeyStore,
    settings: Settings,
    admin_key: tuple[str, str] | None,
    *,
    write_profile: bool = False,
) -> None:
    """Make sure there is an admin key: the one given, the one stored, or a new one (with the
    `lamina` profile written and announced); see the module docstring."""
    if admin_key is not None:
        keys.set_admin(*admin_key)
        if write_profile:
            _announce(*admin_key, settings)
        return
    if keys.admin_key() is not None:
        return
    key_id, secret = keys.create(ADMIN_NAME, admin=True)
    _announce(key_id, secret, settings)


def _announce(key_id: str, secret: str, settings: Settings) -> None:
    creds, config = write_profile(key_id, secret, settings.region, settings.endpoint_url)
    print(
        f"Lamina made an admin access key ({key_id}) and wrote it as the AWS profile "
        f"'{PROFILE}' in {creds} and {config}. Use it with:\n"
        f"    aws --profile {PROFILE} lambda list-functions\n"
        f'    boto3.Session(profile_name="{PROFILE}").client("lambda")\n'
        "The `lamina` command finds it by itself. Make more keys with `lamina keys create`.\n"
        + (
            f"Sign in to the web console, {settings.endpoint_url}/console, with it: its secret "
            f"is `aws configure get aws_secret_access_key --profile {PROFILE}` (kept out of "
            "this log)."
            if settings.console
            else ""
        ),
        file=sys.stderr,
        flush=True,
    )
