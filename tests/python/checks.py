"""Checks of the engine through the official Python SDK, shared by the two ways of connecting.

Each check takes a connected `dagger.Client` and a scratch directory on the host, and raises on failure.
`run_checks` runs them all, prints one line per check, and returns how many failed.
"""

from __future__ import annotations

import os
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


async def check_removal_patterns(client: dagger.Client, scratch: pathlib.Path) -> None:
    # `withoutFile`, `withoutDirectory` and `withoutFiles` take patterns; no match is no error.
    d = (
        client.directory()
        .with_new_file("foo.txt", "")
        .with_new_file("b/foo.txt", "")
        .with_new_file("b/data.json", "")
        .with_new_file("c/file-a1.txt", "")
        .with_new_file("c/file-b1.txt", "")
        .with_new_file("a1/x", "")
        .with_new_file("a2/y", "")
    )
    expect(await d.without_file("b/*.txt").entries(path="b"), ["data.json"], "withoutFile b/*.txt")
    expect(await d.without_file("c/*a1*").entries(path="c"), ["file-b1.txt"], "withoutFile c/*a1*")
    expect(await d.without_directory("a*").entries(), ["b/", "c/", "foo.txt"], "withoutDirectory a*")
    expect(
        await d.without_files(["*.txt", "c/*.nope", "missing"]).entries(),
        ["a1/", "a2/", "b/", "c/"],
        "withoutFiles with patterns",
    )



async def check_with_file_into_a_directory(client: dagger.Client, scratch: pathlib.Path) -> None:
    # A destination that is an existing directory (the root as "", "." or "/") gets the file under its name.
    f = client.directory().with_new_file("sub/deep/some-file", "data").file("sub/deep/some-file")
    for root in ["", ".", "/"]:
        expect(await client.directory().with_file(root, f).entries(), ["some-file"], f"withFile({root!r})")
    d = client.directory().with_new_directory("d")
    expect(await d.with_file("d", f).entries(path="d"), ["some-file"], "withFile into an existing directory")
    expect(await d.with_file("new/", f).entries(path="new"), ["some-file"], "withFile into `new/`")
    expect(await d.with_file("renamed", f).file("renamed").contents(), "data", "withFile to a new name")
    two = client.directory().with_new_file("two", "2").file("two")
    expect(await d.with_files("d", [f, two]).entries(path="d"), ["some-file", "two"], "withFiles")


async def check_glob_marks_directories(client: dagger.Client, scratch: pathlib.Path) -> None:
    d = client.directory().with_new_file("foo/bar.md/w.md", "").with_new_file("foo/baz.go/y.md", "")
    expect(
        await d.glob("**/*.md"),
        ["foo/bar.md/", "foo/bar.md/w.md", "foo/baz.go/y.md"],
        "glob: directories end with /",
    )
    expect(await d.glob("*"), ["foo/"], "glob *")


async def check_exists_and_symlinks(client: dagger.Client, scratch: pathlib.Path) -> None:
    d = (
        client.directory()
        .with_new_file("quotes/descartes", "Cogito, ergo sum")
        .with_symlink("quotes/descartes", "i-am")
        .with_symlink("quotes/does-not-exist", "nothing")
        .with_symlink("/quotes", "abs")
    )
    regular, symlink = dagger.ExistsType.REGULAR_TYPE, dagger.ExistsType.SYMLINK_TYPE
    expect(await d.exists("i-am", expected_type=regular), True, "a link to a file is a regular file")
    expect(await d.exists("i-am", expected_type=symlink), True, "the symlink check sees the link")
    expect(
        await d.exists("i-am", expected_type=regular, do_not_follow_symlinks=True),
        False,
        "doNotFollowSymlinks looks at the link",
    )
    expect(await d.exists("nothing"), False, "a dangling link")
    expect(await d.exists("nothing", do_not_follow_symlinks=True), True, "a dangling link itself")
    expect(await d.exists("abs/descartes", expected_type=regular), True, "an absolute link inside the directory")


async def check_file_names_are_bare(client: dagger.Client, scratch: pathlib.Path) -> None:
    expect(await client.file("some-file", "x").name(), "some-file", "file name")
    try:
        await client.file("dir/some-file", "x").contents()
    except dagger.QueryError as e:
        if "must not contain a directory" not in str(e):
            raise AssertionError(f"unexpected error: {e}") from e
    else:
        raise AssertionError("`file(name: \"dir/some-file\")` succeeded")


async def expect_error(awaitable, wanted: str, what: str) -> None:
    """Awaits `awaitable`, which must fail with an error whose text holds `wanted`."""
    try:
        await awaitable
    except dagger.DaggerError as e:
        if wanted not in str(e):
            raise AssertionError(f"{what}: the error does not say {wanted!r}: {e}") from e
    else:
        raise AssertionError(f"{what}: succeeded; expected an error saying {wanted!r}")


def daggers_gitignore_repo(root: pathlib.Path) -> None:
    """The files of Dagger's `TestDirectoryGitIgnore` (host_test.go) under `root`."""
    (root / ".git").mkdir(parents=True, exist_ok=True)
    files = {
        ".gitignore": "**.txt\n.git/\n!subdir/e.txt\n*.md\ninternal/foo/\n",
        "b.md": "2",
        "c.txt.rar": "3",
        "subdir/b.md": "1",
        "subdir/e.txt": "2",
        "subdir/g.txt": "6",
        "subdir/h.yaml": "6",
        "subdir2/.gitignore": "*.yaml\n.gitignore\n",
        "subdir2/foo.go": "1",
        "subdir2/bar.txt": "1",
        "subdir2/baz.md": "1",
        "subdir2/bool.yaml": "1",
        "bar/bar.txt": "1",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    with open(root / ".gitignore", "a") as f:
        f.write("bar/\n")


async def check_gitignore(client: dagger.Client, scratch: pathlib.Path) -> None:
    # host.directory(gitignore): every .gitignore from the nearest `.git` down, relative to its folder.
    repo = scratch / "gitignore-repo"
    daggers_gitignore_repo(repo)
    d = client.host().directory(str(repo), gitignore=True)
    expect(await d.entries(), [".gitignore", "c.txt.rar", "subdir/", "subdir2/"], "root entries")
    expect(await d.directory("subdir").entries(), ["e.txt", "h.yaml"], "negation re-includes")
    expect(await d.directory("subdir2").entries(), ["foo.go"], "a nested .gitignore")
    sub = client.host().directory(str(repo / "subdir"), gitignore=True)
    expect(await sub.entries(), ["e.txt", "h.yaml"], "a parent's rules apply to a path below it")
    excluded = client.host().directory(str(repo), gitignore=True, exclude=[".gitignore"])
    expect(await excluded.entries(), ["c.txt.rar", "subdir/", "subdir2/"], "an excluded .gitignore")
    expect(await excluded.directory("subdir").entries(), ["e.txt", "h.yaml"], "its rules still apply")
    await expect_error(
        client.host().directory(str(repo / "bar"), gitignore=True).entries(),
        "bar: no such file or directory",
        "an ignored path",
    )
    plain = scratch / "gitignore-plain"
    plain.mkdir(parents=True, exist_ok=True)
    (plain / ".gitignore").write_text("**/**")
    (plain / "foo.go").write_text("1")
    entries = await client.host().directory(str(plain), gitignore=True).entries()
    expect(entries, [".gitignore", "foo.go"], "no .git, no rules")
    # Directory.filter(gitignore): the directory's own .gitignore files, no .git needed.
    own = client.directory().with_new_file(".gitignore", "b.txt\nsubdir/\n").with_new_file("a.txt", "")
    own = own.with_new_file("b.txt", "").with_new_file("subdir/d.txt", "")
    expect(await own.filter(gitignore=True).entries(), [".gitignore", "a.txt"], "Directory.filter(gitignore)")


async def check_directory_keeps_its_root_mode(client: dagger.Client, scratch: pathlib.Path) -> None:
    sub = client.directory().with_new_directory("p", permissions=0o700).with_new_file("p/f", "x").directory("p")
    expect(await sub.stat(".").permissions(), 0o700, "directory(path) keeps its mode")
    copied = client.directory().with_directory("new", sub)
    expect(await copied.stat("new").permissions(), 0o700, "copied to a new path")
    into = client.directory().with_new_directory("old", permissions=0o750).with_directory("old", sub)
    expect(await into.stat("old").permissions(), 0o750, "an existing directory keeps its own")


async def check_host_files_keep_their_times(client: dagger.Client, scratch: pathlib.Path) -> None:
    src = scratch / "times"
    src.mkdir(parents=True, exist_ok=True)
    (src / "f").write_text("x")
    os.utime(src / "f", (499162500, 499162500))
    out = scratch / "times-out"
    await client.host().directory(str(src)).export(str(out))
    expect(int((out / "f").stat().st_mtime), 499162500, "an exported host file keeps its time")


async def check_error_wording(client: dagger.Client, scratch: pathlib.Path) -> None:
    # Dagger's wording: the path as given, then the system's message.
    d = client.directory().with_new_file("a/f", "x").with_new_directory("b")
    await expect_error(d.directory("/foo").sync(), "/foo: no such file or directory", "a missing directory")
    await expect_error(d.file("keep/../this").sync(), "keep/../this: no such file or directory", "a missing file")
    await expect_error(d.file("a").sync(), "path a is a directory, not a file", "a directory as a file")
    await expect_error(d.directory("a/f").sync(), "path a/f is a file, not a directory", "a file as a directory")
    await expect_error(
        d.directory("b").with_new_directory("../c").sync(),
        "cannot create directory outside parent: ../c",
        "withNewDirectory outside its parent",
    )
    await expect_error(d.stat("").name(), ": no such file or directory", "stat of the empty path")
    await expect_error(
        d.without_files(["*.txt", "nothing/*"]).sync(),
        "nothing: no such file or directory",
        "a removal pattern in a missing directory",
    )


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
    check_removal_patterns,
    check_with_file_into_a_directory,
    check_glob_marks_directories,
    check_exists_and_symlinks,
    check_file_names_are_bare,
    check_gitignore,
    check_directory_keeps_its_root_mode,
    check_host_files_keep_their_times,
    check_error_wording,
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
