"""`lamina signers add|list|revoke|remove` (the signing profiles the server trusts, through its
`/lamina/signers` endpoints) and `lamina sign` (sign a deployment package locally with a
private key, in Lamina's signature format: see `lamina.code_signature`)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from lamina.cli.main import Api, _fail, endpoint_option, main

#: AWS Signer's default signature validity: 135 months
_DEFAULT_VALIDITY_DAYS = 4106


@main.group()
def signers() -> None:
    """Signing profiles the server trusts: a profile version ARN and its public key. Code
    signing configurations allow profiles by that ARN."""


@signers.command()
@click.argument("profile_version_arn")
@click.argument("public_key", type=click.Path(path_type=Path, dir_okay=False))
@endpoint_option
def add(profile_version_arn: str, public_key: Path, endpoint: str) -> None:
    """Trust PROFILE_VERSION_ARN, whose signatures verify with the PEM public key in
    PUBLIC_KEY (Ed25519, ECDSA or RSA). Adding it again replaces its key."""
    try:
        pem = public_key.read_text()
    except (OSError, UnicodeDecodeError) as e:
        _fail(f"cannot read {public_key}: {e}")
    body = {"ProfileVersionArn": profile_version_arn, "PublicKey": pem}
    signer = Api(endpoint).call("PUT", "/lamina/signers", json_body=body).json()["Signer"]
    click.echo(f"{click.style('trusted', fg='green')} {signer['ProfileVersionArn']}")


@signers.command(name="list")
@endpoint_option
def list_signers(endpoint: str) -> None:
    """List the trusted signing profile versions."""
    found = Api(endpoint).call("GET", "/lamina/signers").json()["Signers"]
    if not found:
        click.echo("no signers")
        return
    for s in found:
        state = f"revoked {s['Revoked']}" if "Revoked" in s else f"added {s['Added']}"
        click.echo(f"{s['ProfileVersionArn']}  {state}")


@signers.command()
@click.argument("profile_version_arn")
@endpoint_option
def revoke(profile_version_arn: str, endpoint: str) -> None:
    """Revoke PROFILE_VERSION_ARN: packages it signed fail the revocation check."""
    body = {"ProfileVersionArn": profile_version_arn}
    Api(endpoint).call("POST", "/lamina/signers/revoke", json_body=body)
    click.echo(f"{click.style('revoked', fg='yellow')} {profile_version_arn}")


@signers.command()
@click.argument("profile_version_arn")
@endpoint_option
def remove(profile_version_arn: str, endpoint: str) -> None:
    """Stop trusting PROFILE_VERSION_ARN: its packages then count as from an untrusted
    publisher."""
    body = {"ProfileVersionArn": profile_version_arn}
    Api(endpoint).call("DELETE", "/lamina/signers", json_body=body)
    click.echo(f"{click.style('removed', fg='yellow')} {profile_version_arn}")


@main.command()
@click.argument("package", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The signing profile's private key (PEM, unencrypted).",
)
@click.option("--profile", required=True, help="The signing profile version ARN.")
@click.option(
    "--validity-days",
    type=click.IntRange(1, 36_500),
    default=_DEFAULT_VALIDITY_DAYS,
    show_default=True,
    help="How long the signature stays valid (AWS Signer's default: 135 months).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where to write the signed package [default: PACKAGE, in place].",
)
def sign(
    package: Path, key_path: Path, profile: str, validity_days: int, output: Path | None
) -> None:
    """Sign the deployment package PACKAGE (a zip) for the signing profile --profile with
    its private key. The signature goes in the zip's comment; the files are unchanged."""
    # Imported here: `cryptography` is only needed by this command, not by every CLI start.
    from lamina import code_signature

    try:
        data = package.read_bytes()
        key = code_signature.load_private_key(key_path.read_bytes())
    except OSError as e:
        _fail(f"cannot read {e.filename}: {e.strerror}")
    except ValueError as e:
        _fail(f"{key_path}: not a usable private key ({e})")
    now = int(time.time())
    try:
        signed = code_signature.sign(data, key, profile, now, now + validity_days * 86_400)
    except ValueError as e:
        _fail(f"{package}: {e}")
    target = output or package
    try:
        target.write_bytes(signed)
    except OSError as e:
        _fail(f"cannot write {target}: {e.strerror}")
    click.echo(f"{click.style('signed', fg='green')} {target} ({profile})")
