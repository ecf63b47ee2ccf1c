"""Lambda's rules for a deployment package (a zip), checked before anything is written."""

from __future__ import annotations

import base64
import binascii
import io
import posixpath
import stat
import zipfile
from dataclasses import dataclass

from lamina import limits
from lamina.errors import InvalidParameterValueError, RequestEntityTooLargeError

_UNZIP_FAILED = "Could not unzip uploaded file. Please check your file, then try to upload again."
#: Lambda's answer to a zip with no entries (the 22-byte end record and nothing else)
_EMPTY_ZIP = "Uploaded file must be a non-empty zip"


@dataclass(frozen=True)
class CheckedPackage:
    data: bytes
    unzipped_size: int


def decode_zip_file(value: object, operation: str) -> bytes:
    """The `ZipFile` member of a JSON request: base64 text to bytes."""
    if not isinstance(value, str):
        raise InvalidParameterValueError("ZipFile must be a base64-encoded string.")
    if len(value) > limits.CREATE_REQUEST_MAX_BYTES:
        raise RequestEntityTooLargeError(
            f"Request must be smaller than {limits.CREATE_REQUEST_MAX_BYTES} bytes for the "
            f"{operation} operation"
        )
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameterValueError(
            "Could not decode ZipFile: the value is not valid base64."
        ) from None


def check_package(data: bytes, operation: str, *, from_s3: bool = False) -> CheckedPackage:
    """Validate a zip as Lambda would, plus the safety rules for unpacking it here.

    Rejects: more than 50 MB zipped, not a zip, more than 250 MB unzipped (by the sizes the zip
    declares, which `zipfile` then enforces while reading), and entries that would land outside
    the package root: absolute paths, `..` components and symlinks pointing out. A package
    read from S3 (`from_s3`) has no zipped limit of its own: `s3_code` bounds what it reads.
    """
    if not from_s3 and len(data) > limits.ZIP_UPLOAD_MAX_BYTES:
        raise RequestEntityTooLargeError(
            f"Request must be smaller than {limits.CREATE_REQUEST_MAX_BYTES} bytes for the "
            f"{operation} operation"
        )
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
        raise InvalidParameterValueError(_UNZIP_FAILED) from None
    with zf:
        if not zf.infolist():
            raise InvalidParameterValueError(_EMPTY_ZIP)
        total = 0
        # Compare entries by their normalised names: "./a/b" and "a//b" are "a/b".
        names = [posixpath.normpath(i.filename) for i in zf.infolist()]
        seen: set[str] = set()
        for info, name in zip(zf.infolist(), names, strict=True):
            if name in seen and not info.is_dir():
                raise InvalidParameterValueError(
                    f"Could not unzip uploaded file: entry '{info.filename}' appears twice."
                )
            seen.add(name)
        links = {
            name
            for info, name in zip(zf.infolist(), names, strict=True)
            if stat.S_ISLNK(info.external_attr >> 16)
        }
        for info in zf.infolist():
            _check_entry(zf, info, links)
            total += info.file_size
        if total > limits.UNZIPPED_MAX_BYTES:
            raise InvalidParameterValueError(
                f"Unzipped size must be smaller than {limits.UNZIPPED_MAX_BYTES} bytes"
            )
    return CheckedPackage(data=data, unzipped_size=total)


def unzip_failed(detail: str | None = None) -> InvalidParameterValueError:
    """The error for a package that failed while being unpacked (bad CRC, unsafe symlink)."""
    return InvalidParameterValueError(f"{_UNZIP_FAILED} ({detail})" if detail else _UNZIP_FAILED)


def _check_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, links: set[str]) -> None:
    name = info.filename
    parts = posixpath.normpath(name).split("/")
    # `zipfile` cuts a name at its first NUL (`filename`); the name as stored is kept apart.
    if "\x00" in info.orig_filename:
        raise InvalidParameterValueError(
            f"Could not unzip uploaded file: entry {info.orig_filename!r} has a NUL in its name."
        )
    if _escapes(name) or "\\" in name:
        raise InvalidParameterValueError(
            f"Could not unzip uploaded file: entry '{name}' is outside the package root."
        )
    # An entry below a symlink would be written wherever that link points.
    if any("/".join(parts[:i]) in links for i in range(1, len(parts))):
        raise InvalidParameterValueError(
            f"Could not unzip uploaded file: entry '{name}' lies below a symlink."
        )
    if info.flag_bits & 0x1:
        raise InvalidParameterValueError(
            f"Could not unzip uploaded file: entry '{name}' is encrypted."
        )
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        try:
            target = zf.read(info).decode()
        except (UnicodeDecodeError, zipfile.BadZipFile, ValueError):
            raise InvalidParameterValueError(_UNZIP_FAILED) from None
        if not target:
            raise InvalidParameterValueError(
                f"Could not unzip uploaded file: symlink '{name}' has no target."
            )
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        if target.startswith("/") or _escapes(resolved) or resolved == "..":
            raise InvalidParameterValueError(
                f"Could not unzip uploaded file: symlink '{name}' points outside the package "
                f"root ('{target}')."
            )


def _escapes(path: str) -> bool:
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        return True
    return ".." in path.split("/")
