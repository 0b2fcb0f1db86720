"""Checks of the engine through the official Python SDK, shared by the two ways of connecting.

Each check takes a connected `dagger.Client` and a scratch directory on the host, and raises on failure.
`run_checks` runs them all, prints one line per check, and returns how many failed.
"""

from __future__ import annotations

import pathlib
import traceback

import dagger

UNSUPPORTED = "is not supported by this engine yet"


def expect(actual, wanted, what: str) -> None:
    if actual != wanted:
        raise AssertionError(f"{what}: expected {wanted!r}, got {actual!r}")


async def check_version(client: dagger.Client, scratch: pathlib.Path) -> None:
    version = await client.version()
    if not version.startswith("dagger-rs-engine v"):
        raise AssertionError(f"unexpected version {version!r}")


async def check_directory_building(client: dagger.Client, scratch: pathlib.Path) -> None:
    d = (
        client.directory()
        .with_new_file("src/main.py", "print('hi')\n")
        .with_new_file("README.md", "# readme\n")
        .with_new_directory("empty")
    )
    expect(await d.entries(), ["README.md", "empty/", "src/"], "entries")
    expect(await d.file("src/main.py").contents(), "print('hi')\n", "file contents")
    expect(await d.directory("src").entries(), ["main.py"], "sub-directory entries")
    expect(await d.glob("**/*.py"), ["src/main.py"], "glob")


async def check_sync_then_continue(client: dagger.Client, scratch: pathlib.Path) -> None:
    # `sync` returns the object loaded back through `node(id:)`; building on it must work.
    synced = await client.directory().with_new_file("one.txt", "1").sync()
    more = synced.with_new_file("two.txt", "2")
    expect(await more.entries(), ["one.txt", "two.txt"], "entries after sync")
    file = await more.file("two.txt").sync()
    expect(await file.contents(), "2", "contents of a synced file")
    # An object passed as an argument goes by ID.
    merged = client.directory().with_directory("copy", synced)
    expect(await merged.entries(), ["copy/"], "with_directory of a synced directory")
    expect(await merged.file("copy/one.txt").contents(), "1", "copied file")


async def check_legacy_loaders(client: dagger.Client, scratch: pathlib.Path) -> None:
    # The SDK's generated `load_*_from_id` methods send `loadDirectoryFromID(id:)` and friends. Their
    # parameters are typed (`dagger.DirectoryID`), while `id()` returns a plain `str`, as with Dagger 0.21.
    d = client.directory().with_new_file("a.txt", "A").with_new_directory("sub")
    loaded = client.load_directory_from_id(dagger.DirectoryID(await d.id()))
    expect(await loaded.entries(), ["a.txt", "sub/"], "entries of a loaded directory")
    more = loaded.with_new_file("b.txt", "B")
    expect(await more.entries(), ["a.txt", "b.txt", "sub/"], "building on a loaded directory")
    file_id = await d.file("a.txt").id()
    expect(await client.load_file_from_id(dagger.FileID(file_id)).contents(), "A", "contents of a loaded file")
    secret = client.load_secret_from_id(dagger.SecretID(await client.set_secret("s", "pw").id()))
    expect(await secret.plaintext(), "pw", "plaintext of a loaded secret")
    try:
        await client.load_directory_from_id(dagger.DirectoryID(file_id)).entries()
    except dagger.QueryError as e:
        if "File" not in str(e) or "Directory" not in str(e):
            raise AssertionError(f"the error does not name both types: {e}") from e
    else:
        raise AssertionError("loading a File ID as a Directory succeeded")


async def check_host_directory_with_exclude(client: dagger.Client, scratch: pathlib.Path) -> None:
    src = scratch / "host-src"
    (src / "sub").mkdir(parents=True, exist_ok=True)
    (src / "keep.txt").write_text("keep")
    (src / "drop.log").write_text("drop")
    (src / "sub" / "nested.txt").write_text("nested")
    d = client.host().directory(str(src), exclude=["*.log"])
    expect(await d.entries(), ["keep.txt", "sub/"], "host directory entries")
    expect(await d.file("sub/nested.txt").contents(), "nested", "host file contents")


async def check_export(client: dagger.Client, scratch: pathlib.Path) -> None:
    out = scratch / "exported"
    d = client.directory().with_new_file("a/b.txt", "exported!")
    path = await d.export(str(out))
    expect(pathlib.Path(path).resolve(), out.resolve(), "export returns the path written")
    expect((out / "a" / "b.txt").read_text(), "exported!", "exported file on the host")
    single = scratch / "single.txt"
    await client.directory().with_new_file("x", "single").file("x").export(str(single))
    expect(single.read_text(), "single", "exported single file")


async def check_secret(client: dagger.Client, scratch: pathlib.Path) -> None:
    secret = client.set_secret("api-token", "hunter2")
    expect(await secret.name(), "api-token", "secret name")
    expect(await secret.plaintext(), "hunter2", "secret plaintext")


async def check_unsupported_field_is_a_clear_error(client: dagger.Client, scratch: pathlib.Path) -> None:
    try:
        await client.directory().docker_build().sync()
    except dagger.QueryError as e:
        if UNSUPPORTED not in str(e):
            raise AssertionError(f"the error does not say the field is unsupported: {e}") from e
        return
    raise AssertionError("`Directory.dockerBuild` succeeded; expected an unsupported-field error")


CHECKS = [
    check_version,
    check_directory_building,
    check_sync_then_continue,
    check_legacy_loaders,
    check_host_directory_with_exclude,
    check_export,
    check_secret,
    check_unsupported_field_is_a_clear_error,
]


async def run_checks(client: dagger.Client, scratch: pathlib.Path, label: str) -> int:
    failed = 0
    for check in CHECKS:
        try:
            await check(client, scratch)
        except Exception:  # noqa: BLE001 - every failure is reported, then counted
            failed += 1
            print(f"FAIL [{label}] {check.__name__}")
            traceback.print_exc()
        else:
            print(f"ok   [{label}] {check.__name__}")
    return failed
