"""Lambda's deployment-package rules (`lamina.control.packages`)."""

from __future__ import annotations

import base64
import io
import stat
import zipfile

import pytest

from lamina import limits
from lamina.control import packages
from lamina.errors import InvalidParameterValueError, RequestEntityTooLargeError

UNZIP_FAILED = "Could not unzip uploaded file. Please check your file, then try to upload again."


def make_zip(
    files: dict[str, bytes] | None = None,
    links: dict[str, str] | None = None,
    *,
    order: list[str] | None = None,
) -> bytes:
    """A zip with regular `files` and symlink entries `links` (name -> target)."""
    entries: dict[str, tuple[bytes, int]] = {}
    for name, data in (files or {}).items():
        entries[name] = (data, stat.S_IFREG | 0o644)
    for name, target in (links or {}).items():
        entries[name] = (target.encode(), stat.S_IFLNK | 0o777)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in order or list(entries):
            data, mode = entries[name]
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return buf.getvalue()


# -- check_package: accepted packages ----------------------------------------------------


def test_valid_zip_passes_and_reports_unzipped_size() -> None:
    data = make_zip({"handler.py": b"def handler(e, c):\n    return 1\n", "lib/x.txt": b"x" * 100})
    checked = packages.check_package(data, "CreateFunction")
    assert checked.data == data
    assert checked.unzipped_size == len(b"def handler(e, c):\n    return 1\n") + 100


def test_unzipped_size_counts_declared_sizes_not_compressed_ones() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros", bytes(100_000))
    data = buf.getvalue()
    assert len(data) < 10_000
    assert packages.check_package(data, "CreateFunction").unzipped_size == 100_000


def test_directory_entries_and_nested_files_are_fine() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo("pkg/"), b"")
        zf.writestr("pkg/mod.py", b"x = 1\n")
    assert packages.check_package(buf.getvalue(), "CreateFunction").unzipped_size == 6


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("link", "handler.py"),
        ("lib/link", "../handler.py"),  # up one level, still inside
        ("lib/deeper/link", "../../lib"),
        ("self", "."),
    ],
)
def test_symlink_pointing_inside_is_accepted(name: str, target: str) -> None:
    data = make_zip({"handler.py": b"x", "lib/a.py": b"y"}, {name: target})
    packages.check_package(data, "CreateFunction")


# -- check_package: not a zip --------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"not a zip at all", b"PK\x03\x04garbage", make_zip({"a": b"1"})[:-10]],
    ids=["empty", "text", "bad-header", "truncated"],
)
def test_not_a_zip_is_invalid_parameter(data: bytes) -> None:
    with pytest.raises(InvalidParameterValueError) as exc:
        packages.check_package(data, "CreateFunction")
    assert exc.value.message == UNZIP_FAILED
    assert exc.value.status == 400
    assert exc.value.error_type == "InvalidParameterValueException"


# -- check_package: entries outside the root ----------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../evil.py", "a/../../evil.py", "lib/../../x", "/etc/x", "/abs/path", "a\\..\\b", "C:/x"],
)
def test_entry_outside_root_is_rejected(name: str) -> None:
    data = make_zip({"ok.py": b"1", name: b"2"})
    with pytest.raises(InvalidParameterValueError, match="outside the package root"):
        packages.check_package(data, "CreateFunction")


def test_dotdot_inside_a_name_is_not_a_traversal() -> None:
    # ".." only matters as a whole path component.
    data = make_zip({"a..b/c..py": b"1", "..hidden": b"2"})
    packages.check_package(data, "CreateFunction")


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("link", "../../etc"),
        ("link", ".."),
        ("lib/link", "../.."),
        ("link", "/etc/passwd"),
        ("link", "/"),
        ("link", "lib/../../x"),
    ],
)
def test_symlink_pointing_outside_is_rejected(name: str, target: str) -> None:
    data = make_zip({"handler.py": b"x"}, {name: target})
    with pytest.raises(InvalidParameterValueError, match="points outside the package root"):
        packages.check_package(data, "CreateFunction")


@pytest.mark.parametrize("link_first", [True, False])
def test_entry_below_a_symlink_is_rejected_in_any_order(link_first: bool) -> None:
    order = ["link", "link/payload.py"] if link_first else ["link/payload.py", "link"]
    data = make_zip({"link/payload.py": b"x"}, {"link": "lib"}, order=order)
    with pytest.raises(InvalidParameterValueError, match="lies below a symlink"):
        packages.check_package(data, "CreateFunction")


def test_entry_below_a_nested_symlink_is_rejected() -> None:
    data = make_zip({"a/b/c/d.py": b"x"}, {"a/b": "."})
    with pytest.raises(InvalidParameterValueError, match="lies below a symlink"):
        packages.check_package(data, "CreateFunction")


def test_sibling_with_symlink_name_as_prefix_is_not_below_it() -> None:
    data = make_zip({"linkage/x.py": b"x"}, {"link": "linkage"})
    packages.check_package(data, "CreateFunction")


def test_entry_below_a_symlink_spelled_with_dot_component_is_rejected() -> None:
    data = make_zip({"lib/a.py": b"1", "./link/x.py": b"2"}, {"link": "lib"})
    with pytest.raises(InvalidParameterValueError):
        packages.check_package(data, "CreateFunction")


def test_symlink_with_undecodable_target_is_rejected() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, b"\xff\xfe")
    with pytest.raises(InvalidParameterValueError, match="Could not unzip"):
        packages.check_package(buf.getvalue(), "CreateFunction")


def test_encrypted_entry_is_rejected() -> None:
    data = bytearray(make_zip({"a.py": b"1"}))
    # Set the "encrypted" general-purpose flag in the central directory entry.
    cd = data.index(b"PK\x01\x02")
    data[cd + 8] |= 0x1
    with pytest.raises(InvalidParameterValueError, match="encrypted"):
        packages.check_package(bytes(data), "CreateFunction")


# -- check_package: sizes --------------------------------------------------------------------


def test_unzipped_size_over_the_real_limit_is_rejected() -> None:
    buf = io.BytesIO()
    chunk = bytes(1 << 20)
    with (
        zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf,
        zf.open("zeros.bin", "w", force_zip64=True) as f,
    ):
        for _ in range(limits.UNZIPPED_MAX_BYTES // len(chunk)):
            f.write(chunk)
        f.write(b"\0")  # one byte over
    data = buf.getvalue()
    assert len(data) < limits.ZIP_UPLOAD_MAX_BYTES
    with pytest.raises(InvalidParameterValueError) as exc:
        packages.check_package(data, "CreateFunction")
    assert exc.value.message == (
        f"Unzipped size must be smaller than {limits.UNZIPPED_MAX_BYTES} bytes"
    )


def test_unzipped_size_limit_is_inclusive_and_sums_all_entries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "UNZIPPED_MAX_BYTES", 100)
    packages.check_package(make_zip({"a": b"x" * 60, "b": b"y" * 40}), "CreateFunction")
    with pytest.raises(InvalidParameterValueError, match="Unzipped size must be smaller than 100"):
        packages.check_package(make_zip({"a": b"x" * 60, "b": b"y" * 41}), "CreateFunction")


def test_zip_over_upload_limit_is_request_entity_too_large(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = make_zip({"a.py": b"x" * 200})
    monkeypatch.setattr(limits, "ZIP_UPLOAD_MAX_BYTES", len(data) - 1)
    with pytest.raises(RequestEntityTooLargeError) as exc:
        packages.check_package(data, "UpdateFunctionCode")
    assert exc.value.status == 413
    assert "UpdateFunctionCode operation" in exc.value.message
    monkeypatch.setattr(limits, "ZIP_UPLOAD_MAX_BYTES", len(data))
    packages.check_package(data, "UpdateFunctionCode")


def test_size_limit_checked_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "ZIP_UPLOAD_MAX_BYTES", 4)
    with pytest.raises(RequestEntityTooLargeError):
        packages.check_package(b"definitely not a zip", "CreateFunction")


# -- decode_zip_file ------------------------------------------------------------------------


def test_decode_zip_file_round_trips_base64() -> None:
    data = make_zip({"a.py": b"1"})
    assert packages.decode_zip_file(base64.b64encode(data).decode(), "CreateFunction") == data


@pytest.mark.parametrize(
    "value", ["not base64!!", "YWJj ZGVm", "YWJjZA", "YWJj\nZGVm", "ÿÿÿÿ"], ids=repr
)
def test_decode_zip_file_rejects_bad_base64(value: str) -> None:
    with pytest.raises(InvalidParameterValueError, match="not valid base64"):
        packages.decode_zip_file(value, "CreateFunction")


@pytest.mark.parametrize("value", [None, 123, b"UEsDBA==", ["UEsDBA=="], {"a": 1}])
def test_decode_zip_file_rejects_non_string(value: object) -> None:
    with pytest.raises(InvalidParameterValueError, match="base64-encoded string"):
        packages.decode_zip_file(value, "CreateFunction")


def test_decode_zip_file_rejects_oversized_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "CREATE_REQUEST_MAX_BYTES", 8)
    assert packages.decode_zip_file("YWJjZGVm", "CreateFunction") == b"abcdef"
    with pytest.raises(RequestEntityTooLargeError, match="CreateFunction operation"):
        packages.decode_zip_file("YWJjZGVmZ2g=", "CreateFunction")


# -- unzip_failed -----------------------------------------------------------------------------


def test_unzip_failed_without_detail_is_the_plain_message() -> None:
    err = packages.unzip_failed()
    assert isinstance(err, InvalidParameterValueError)
    assert err.message == UNZIP_FAILED


def test_unzip_failed_appends_detail() -> None:
    err = packages.unzip_failed("symlink 'l' points outside")
    assert err.message == f"{UNZIP_FAILED} (symlink 'l' points outside)"
    assert err.error_type == "InvalidParameterValueException"
