"""Code signing configurations, the functions that use them, the signing profiles Lamina
trusts, and the check of each package deployed to such a function.

A configuration (`csc-` and 17 hex digits) lists up to 20 signing profile version ARNs whose
signatures are accepted, and a policy for a package that fails: `Enforce` refuses it,
`Warn` (the default) deploys it with a warning (a server log line and the
`lamina_signature_validation_errors_total` metric, as Lambda emits SignatureValidationErrors).

Lambda's checks, in its order (`code_signature` describes the signature format):
1. Integrity: the signature is the named profile's over this package. Failing it is
   InvalidCodeSignatureException whatever the policy. A profile Lamina holds no public key for
   cannot be checked, so its packages count as from an untrusted publisher (3).
2. Expiry: the signature's validity period has not ended.
3. Mismatch: the profile is one the configuration allows (an unsigned package fails here).
4. Revocation: the profile has not been revoked in Lamina (`lamina signers revoke`).
Failing 2-4 is CodeVerificationFailedException under Enforce.

State is kept in memory (a deployment's check must not read the database) and written
through to the store on the control worker.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from lamina import code_signature
from lamina.arns import FunctionRef
from lamina.cluster.api import ChangeFeed
from lamina.cluster.local import NoFeed
from lamina.control import changes, listing
from lamina.control import validation as v
from lamina.control.function_input import checked_tags
from lamina.errors import (
    CodeSigningConfigNotFoundError,
    CodeVerificationFailedError,
    InvalidCodeSignatureError,
    InvalidParameterValueError,
    ResourceConflictError,
    ResourceNotFoundError,
)
from lamina.models import CodeSigningConfig, FunctionConfig, TrustedSigner
from lamina.settings import Settings
from lamina.store.code_signing import CodeSigningStore

log = logging.getLogger(__name__)

T = TypeVar("T")

#: botocore's CodeSigningConfigArn pattern (the model's, verbatim)
CONFIG_ARN = re.compile(
    r"arn:(aws[a-zA-Z-]*)?:lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:"
    r"\d{12}:code-signing-config:csc-[a-z0-9]{17}"
)
#: botocore's Arn pattern, which each SigningProfileVersionArns member must match
_PROFILE_ARN = re.compile(
    r"arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?"
    r"-[a-z]+-\d{1})?:(\d{12})?:(.*)"
)
POLICIES = ("Warn", "Enforce")
PROFILES_MAX = 20
_DESCRIPTION_MAX = 256
_ARN_MAX = 200
_PROFILE_ARN_MAX = 10_000

#: `on_warning(function_name, check)`: a Warn-policy package failed `check`
WarningSink = Callable[[str, str], None]


class Functions(Protocol):
    """What this service needs of the function service (not the whole of it)."""

    def require(self, name: str) -> FunctionConfig: ...

    def ref(self, value: str, qualifier: str | None = None) -> FunctionRef: ...

    def arn(self, name: str, qualifier: str | None = None) -> str: ...

    def run(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]: ...

    def changed(self, name: str) -> Awaitable[None]:
        """Tell the other nodes that the function's settings changed."""


class CodeSigning:
    """The configurations, the function links, the trusted signers, and package checks."""

    def __init__(self, functions: Functions, store: CodeSigningStore, settings: Settings) -> None:
        self._functions = functions
        self._store = store
        self._settings = settings
        self._configs: dict[str, CodeSigningConfig] = {}  # by id
        self._links: dict[str, str] = {}  # function name -> config id
        self._signers: dict[str, TrustedSigner] = {}  # by profile ARN
        self._keys: dict[str, code_signature.PublicKey] = {}
        self._held: dict[str, int] = {}  # config id -> functions being created with it
        self._writing = asyncio.Lock()
        #: the other nodes on the same database (the server sets it)
        self.feed: ChangeFeed = NoFeed()
        #: told of every check a Warn-policy package failed (the server counts them)
        self.on_warning: WarningSink = lambda name, check: None

    async def load(self) -> None:
        self._configs = {c.id: c for c in await self._functions.run(self._store.configs)}
        self._links = await self._functions.run(self._store.links)
        self._signers, self._keys = {}, {}
        for signer in await self._functions.run(self._store.signers):
            self._keep_signer(signer)

    async def refresh(self, key: str) -> None:
        """Another node changed a configuration or a trusted signer: they are few, and are
        read again whole."""
        async with self._writing:
            await self.load()

    async def _changed(self, key: str) -> None:
        await changes.tell(self.feed, "code-signing", key)

    # -- configurations --------------------------------------------------------------

    def _arn(self, config_id: str) -> str:
        s = self._settings
        return f"arn:aws:lambda:{s.region}:{s.account_id}:code-signing-config:{config_id}"

    def find(self, arn: Any, where: str = "codeSigningConfigArn") -> CodeSigningConfig:
        """The configuration with this ARN: ValidationException for a malformed ARN,
        ResourceNotFoundException for one that does not exist."""
        c = v.Constraints()
        c.string(arn, where, max_len=_ARN_MAX, pattern=CONFIG_ARN, required=True)
        c.check()
        config = self._configs.get(str(arn).rsplit(":", 1)[-1])
        if config is None or config.arn != arn:
            raise ResourceNotFoundError(
                f"The code signing configuration cannot be found. Check that the provided "
                f"configuration is not deleted: {arn}."
            )
        return config

    async def create(
        self, description: Any, publishers: Any, policies: Any, tags: Any
    ) -> CodeSigningConfig:
        c = v.Constraints()
        profiles = _publishers(c, publishers, required=True)
        text = c.string(description, "description", max_len=_DESCRIPTION_MAX)
        policy = _policy(c, policies)
        checked = checked_tags(c, tags)
        c.check()
        assert profiles is not None
        config_id = "csc-" + secrets.token_hex(9)[:17]
        config = CodeSigningConfig(
            id=config_id,
            arn=self._arn(config_id),
            description=text or "",
            allowed_profiles=profiles,
            policy=policy or "Warn",
            last_modified=datetime.now(UTC),
            tags=checked or {},
        )
        async with self._writing:
            await self._functions.run(self._store.put_config, config)
            self._configs[config_id] = config
        await self._changed(config_id)
        return config

    async def update(
        self, arn: Any, description: Any, publishers: Any, policies: Any
    ) -> CodeSigningConfig:
        c = v.Constraints()
        c.string(arn, "codeSigningConfigArn", max_len=_ARN_MAX, pattern=CONFIG_ARN, required=True)
        profiles = _publishers(c, publishers, required=False)
        text = c.string(description, "description", max_len=_DESCRIPTION_MAX)
        policy = _policy(c, policies)
        c.check()
        async with self._writing:
            current = self.find(arn)
            new = replace(
                current,
                description=current.description if text is None else text,
                allowed_profiles=current.allowed_profiles if profiles is None else profiles,
                policy=policy or current.policy,
                last_modified=datetime.now(UTC),
            )
            await self._functions.run(self._store.put_config, new)
            self._configs[new.id] = new
        await self._changed(new.id)
        return new

    async def read_tags(self, config_id: str) -> dict[str, str] | None:
        """A configuration's tags (TagResource and friends, through `control.tags`)."""
        config = self._configs.get(config_id)
        return dict(config.tags) if config is not None else None

    async def write_tags(self, config_id: str, tags: dict[str, str]) -> bool:
        """Replace a configuration's tags; False if it is gone."""
        async with self._writing:
            current = self._configs.get(config_id)
            if current is None:
                return False
            new = replace(current, tags=dict(tags))
            await self._functions.run(self._store.put_config, new)
            self._configs[new.id] = new
        await self._changed(new.id)
        return True

    async def delete(self, arn: Any) -> None:
        async with self._writing:
            config = self.find(arn)
            if config.id in self._held or not await self._functions.run(
                self._store.delete_config, config.id
            ):
                raise ResourceConflictError(
                    "The code signing configuration cannot be deleted because it is used by "
                    "one or more functions."
                )
            self._configs.pop(config.id, None)
        await self._changed(config.id)

    def configs(self, marker: Any, max_items: Any) -> tuple[list[CodeSigningConfig], str | None]:
        c = v.Constraints()
        limit = v.max_items(c, max_items)
        c.check()
        return listing.page(
            "ListCodeSigningConfigs",
            self._configs.values(),
            lambda cfg: cfg.id,
            limit,
            marker,
            order=lambda key: key,
        )

    def functions_using(
        self, arn: Any, marker: Any, max_items: Any
    ) -> tuple[list[str], str | None]:
        """ListFunctionsByCodeSigningConfig: the ARNs of the functions using it."""
        config = self.find(arn)
        c = v.Constraints()
        limit = v.max_items(c, max_items)
        c.check()
        names, next_marker = listing.page(
            "ListFunctionsByCodeSigningConfig",
            [name for name, cid in self._links.items() if cid == config.id],
            lambda name: name,
            limit,
            marker,
            order=lambda key: key,
        )
        return [self._functions.arn(name) for name in names], next_marker

    # -- functions -------------------------------------------------------------------

    def config_for_new_function(self, arn: Any) -> CodeSigningConfig | None:
        """CreateFunction's CodeSigningConfigArn: the configuration, or None if not given."""
        if arn is None:
            return None
        try:
            return self.find(arn)
        except ResourceNotFoundError as e:
            raise CodeSigningConfigNotFoundError(e.message) from None

    def of_function(self, name: str) -> CodeSigningConfig | None:
        """The configuration the function uses, if any (no I/O)."""
        config_id = self._links.get(name)
        return self._configs.get(config_id) if config_id is not None else None

    async def link(self, function: Any, arn: Any) -> tuple[str, CodeSigningConfig]:
        """PutFunctionCodeSigningConfig: (the function's name, its configuration)."""
        name = self._function_name(function)
        try:
            config = self.find(arn)
        except ResourceNotFoundError as e:
            raise CodeSigningConfigNotFoundError(e.message) from None
        async with self._writing:
            self._functions.require(name)
            if not await self._functions.run(self._store.link, name, config.id):
                self._functions.require(name)  # the function went: its not-found error
                raise CodeSigningConfigNotFoundError(
                    "The code signing configuration cannot be found. Check that the provided "
                    f"configuration is not deleted: {config.arn}."
                )
            self._links[name] = config.id
        await self._functions.changed(name)
        return name, config

    @contextmanager
    def holding(self, config: CodeSigningConfig | None) -> Iterator[None]:
        """Keep `config` from being deleted while a function is being created with it (its
        link is written after the function's row)."""
        if config is None:
            yield
            return
        self._held[config.id] = self._held.get(config.id, 0) + 1
        try:
            yield
        finally:
            self._held[config.id] -= 1
            if not self._held[config.id]:
                del self._held[config.id]

    async def link_new(self, name: str, config: CodeSigningConfig) -> None:
        """Record the configuration a just-created function was created with."""
        async with self._writing:
            if not await self._functions.run(self._store.link, name, config.id):
                raise CodeSigningConfigNotFoundError(
                    "The code signing configuration cannot be found. Check that the provided "
                    f"configuration is not deleted: {config.arn}."
                )
            self._links[name] = config.id

    def function_config(self, function: Any) -> tuple[str, CodeSigningConfig | None]:
        """GetFunctionCodeSigningConfig: (the function's name, its configuration or None)."""
        name = self._function_name(function)
        self._functions.require(name)
        return name, self.of_function(name)

    async def unlink(self, function: Any) -> None:
        """DeleteFunctionCodeSigningConfig (a function without one is left as it is)."""
        name = self._function_name(function)
        async with self._writing:
            self._functions.require(name)
            await self._functions.run(self._store.unlink, name)
            self._links.pop(name, None)
        await self._functions.changed(name)

    def forget_function(self, name: str) -> None:
        """The function was deleted (the store dropped its link in the same transaction)."""
        self._links.pop(name, None)

    def _function_name(self, value: Any) -> str:
        c = v.Constraints()
        c.string(value, "functionName", max_len=256, required=True)
        c.check()
        ref = self._functions.ref(value)
        if ref.qualifier is not None:
            raise InvalidParameterValueError(
                "Code signing configurations apply to functions, not to versions or aliases."
            )
        return ref.name

    # -- trusted signers -------------------------------------------------------------

    def signers(self) -> list[TrustedSigner]:
        return sorted(self._signers.values(), key=lambda s: s.profile_arn)

    async def put_signer(self, profile_arn: Any, public_key_pem: Any) -> TrustedSigner:
        """Trust (or re-key) a signing profile version: its signatures verify with this key."""
        c = v.Constraints()
        c.string(
            profile_arn,
            "profileVersionArn",
            max_len=_PROFILE_ARN_MAX,
            pattern=_PROFILE_ARN,
            required=True,
        )
        c.string(public_key_pem, "publicKey", max_len=65_536, required=True)
        c.check()
        try:
            code_signature.load_public_key(str(public_key_pem).encode())
        except ValueError as e:
            raise InvalidParameterValueError(f"The public key cannot be used: {e}.") from None
        signer = TrustedSigner(str(profile_arn), str(public_key_pem), datetime.now(UTC))
        async with self._writing:
            await self._functions.run(self._store.put_signer, signer)
            self._keep_signer(signer)
        await self._changed("*")
        return signer

    async def revoke_signer(self, profile_arn: str) -> TrustedSigner:
        """Revoke a signing profile version: its signatures fail the revocation check."""
        async with self._writing:
            signer = self._signer(profile_arn)
            revoked = replace(signer, revoked=signer.revoked or datetime.now(UTC))
            await self._functions.run(self._store.put_signer, revoked)
            self._keep_signer(revoked)
        await self._changed("*")
        return revoked

    async def remove_signer(self, profile_arn: str) -> None:
        async with self._writing:
            self._signer(profile_arn)
            await self._functions.run(self._store.delete_signer, profile_arn)
            self._signers.pop(profile_arn, None)
            self._keys.pop(profile_arn, None)
        await self._changed("*")

    def _signer(self, profile_arn: str) -> TrustedSigner:
        signer = self._signers.get(profile_arn)
        if signer is None:
            raise ResourceNotFoundError(f"No trusted signer: {profile_arn}")
        return signer

    def _keep_signer(self, signer: TrustedSigner) -> None:
        self._signers[signer.profile_arn] = signer
        try:
            self._keys[signer.profile_arn] = code_signature.load_public_key(
                signer.public_key_pem.encode()
            )
        except ValueError:  # checked when added: only a damaged database gets here
            log.error("the public key of signer %s cannot be loaded", signer.profile_arn)
            self._keys.pop(signer.profile_arn, None)

    # -- the check of a deployment ---------------------------------------------------

    def check(
        self, name: str, config: CodeSigningConfig | None, package: bytes
    ) -> tuple[str, str] | None:
        """Check a package deployed to the function `name` under `config` (nothing to check
        without one). Raises as Lambda refuses; returns (SigningProfileVersionArn,
        SigningJobArn) when every check passed, None when it was accepted with a warning or
        not checked. CPU-bound on large packages (one SHA-256 pass): callers run it off the
        event loop."""
        if config is None:
            return None
        arn = self._functions.arn(name)
        try:
            unsigned, sig = code_signature.split(package)
        except code_signature.MalformedSignatureError:
            raise InvalidCodeSignatureError(_integrity_message(arn)) from None
        except ValueError:
            return None  # not a zip: the package check refuses it with its own message
        failed: str | None = None
        key = self._keys.get(sig.profile) if sig is not None else None
        if sig is None:
            failed = "Unsigned"
        elif key is None:
            failed = "Mismatch"
        elif not code_signature.verify(key, unsigned, sig):
            raise InvalidCodeSignatureError(_integrity_message(arn))
        elif sig.expires <= time.time():
            failed = "Expiry"
        elif sig.profile not in config.allowed_profiles:
            failed = "Mismatch"
        elif self._signers[sig.profile].revoked is not None:
            failed = "Revocation"
        if failed is None:
            assert sig is not None
            s = self._settings
            job = f"arn:aws:signer:{s.region}:{s.account_id}:/signing-jobs/{sig.job}"
            return sig.profile, job
        if config.policy == "Enforce":
            raise CodeVerificationFailedError(
                "Lambda cannot deploy the function. The function or layer might be signed "
                "using a signature that the client is not configured to accept. Check the "
                f"provided signature for {arn}."
            )
        log.warning(
            "code signing: %s deployed with a package that failed the %s check (policy Warn of %s)",
            arn,
            failed,
            config.arn,
        )
        self.on_warning(name, failed)
        return None


def _integrity_message(arn: str) -> str:
    return (
        "Lambda cannot deploy the function. The code signature failed the integrity check: "
        f"the package was modified after it was signed. Check the provided signature for {arn}."
    )


def _publishers(c: v.Constraints, value: Any, *, required: bool) -> tuple[str, ...] | None:
    if value is None:
        if required:
            c.fail(None, "allowedPublishers", "Member must not be null")
        return None
    arns = value.get("SigningProfileVersionArns") if isinstance(value, dict) else None
    where = "allowedPublishers.signingProfileVersionArns"
    if not isinstance(value, dict) or set(value) - {"SigningProfileVersionArns"}:
        c.fail(value, "allowedPublishers", "Member must be an AllowedPublishers structure")
        return None
    if arns is None:
        c.fail(None, where, "Member must not be null")
        return None
    if not isinstance(arns, list):
        c.fail(arns, where, "Member must be a list")
        return None
    if not 1 <= len(arns) <= PROFILES_MAX:
        c.fail(
            arns,
            where,
            f"Member must have length less than or equal to {PROFILES_MAX}"
            if arns
            else "Member must have length greater than or equal to 1",
        )
        return None
    out: list[str] = []
    for arn in arns:
        ok = c.string(arn, where, max_len=_PROFILE_ARN_MAX, pattern=_PROFILE_ARN, required=True)
        if ok is None:
            return None
        if ok not in out:
            out.append(ok)
    return tuple(out)


def _policy(c: v.Constraints, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"UntrustedArtifactOnDeployment"}:
        c.fail(value, "codeSigningPolicies", "Member must be a CodeSigningPolicies structure")
        return None
    policy = value.get("UntrustedArtifactOnDeployment")
    if policy is None:
        return None
    if policy not in POLICIES:
        c.fail(
            policy,
            "codeSigningPolicies.untrustedArtifactOnDeployment",
            "Member must satisfy enum value set: [Enforce, Warn]",
        )
        return None
    return str(policy)
