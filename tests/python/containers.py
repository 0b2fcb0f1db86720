"""Container pipelines through the official Python SDK: `dagger-rs run python containers.py`.

DRS_TEST_REGISTRY names a plain-HTTP registry (such as `127.0.0.1:5000`) that already holds
`busybox:latest`; the script pulls from it, runs real containers, and publishes `py-app:latest` back to it.
It connects the way any SDK program does (`dagger.connection()`), so it also works when the SDK starts the
CLI itself through `_EXPERIMENTAL_DAGGER_CLI_BIN`. Each check prints `ok` or `FAIL`; any failure makes the
exit code non-zero.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import re
import sys
import tarfile
import tempfile
import time
import traceback

import dagger
from checks import expect
from dagger import dag

REGISTRY_VAR = "DRS_TEST_REGISTRY"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Distinguishes this run's files in cache volumes and the registry from earlier runs'.
RUN = f"{os.getpid()}-{time.time_ns()}"


def busybox(reg: str) -> dagger.Container:
    return dag.container().from_(f"{reg}/busybox:latest")


async def check_env_workdir_and_exec(reg: str, scratch: pathlib.Path) -> None:
    c = (
        busybox(reg)
        .with_env_variable("GREETING", "hello")
        .with_workdir("/work/here")
        .with_exec(["sh", "-c", "echo $GREETING from $(pwd) as $(id -u); echo $PATH"])
    )
    expect(await c.stdout(), f"hello from /work/here as 0\n{IMAGE_PATH}\n", "stdout")
    expect(await c.env_variable("GREETING"), "hello", "env_variable")
    expect(await c.workdir(), "/work/here", "workdir")
    expect(await c.exit_code(), 0, "exit_code")
    # Each exec starts from the previous one's filesystem.
    chained = c.with_exec(["sh", "-c", "echo one > f"]).with_exec(["cat", "/work/here/f"])
    expect(await chained.stdout(), "one\n", "stdout of a chained exec")


async def check_load_container_from_id(reg: str, scratch: pathlib.Path) -> None:
    # `load_container_from_id` sends `loadContainerFromID(id:)`, as every official 0.21 SDK does.
    c = busybox(reg).with_env_variable("WHO", "loaded").with_exec(["sh", "-c", "echo $WHO > /who"])
    loaded = dag.load_container_from_id(dagger.ContainerID(await c.id()))
    expect(await loaded.env_variable("WHO"), "loaded", "env_variable of a loaded container")
    expect(await loaded.with_exec(["cat", "/who"]).stdout(), "loaded\n", "exec on a loaded container")
    synced = dag.load_container_from_id(dagger.ContainerID(await (await c.sync()).id()))
    expect(await synced.file("/who").contents(), "loaded\n", "file of a synced, loaded container")


async def check_paths_like_dagger(reg: str, scratch: pathlib.Path) -> None:
    # Removal patterns, withFile into a directory, exists and symlinks, in a container.
    c = (
        busybox(reg)
        .with_workdir("/workdir")
        .with_new_file("moo", "")
        .with_new_file("foo", "")
        .with_new_file("bar/man", "")
        .with_symlink("/workdir/foo", "/foo-link")
    )
    out = await c.without_file("*oo").with_exec(["ls", "-1"]).stdout()
    expect(out, "bar\n", "withoutFile *oo")
    out = await c.without_files(["*oo", "bar/*.none", "missing"]).with_exec(["ls", "-1"]).stdout()
    expect(out, "bar\n", "withoutFiles with patterns")
    f = dag.directory().with_new_file("sub/some-file", "data").file("sub/some-file")
    expect(await c.with_file("/tmp", f).file("/tmp/some-file").contents(), "data", "withFile into /tmp")
    expect(await c.with_file("", f).file("some-file").contents(), "data", "withFile into the workdir")
    regular, symlink = dagger.ExistsType.REGULAR_TYPE, dagger.ExistsType.SYMLINK_TYPE
    expect(await c.exists("/foo-link", expected_type=regular), True, "exists follows a link")
    expect(await c.exists("/foo-link", expected_type=symlink), True, "the symlink check sees the link")
    expect(
        await c.exists("/foo-link", expected_type=regular, do_not_follow_symlinks=True),
        False,
        "doNotFollowSymlinks",
    )


async def check_mounted_directory_and_results(reg: str, scratch: pathlib.Path) -> None:
    src = dag.directory().with_new_file("in.txt", "hello\n").with_new_file("sub/b.txt", "B")
    c = (
        busybox(reg)
        .with_mounted_directory("/src", src)
        .with_exec(
            [
                "sh",
                "-c",
                "cat /src/in.txt /src/sub/b.txt > /src/out.txt; "
                "mkdir -p /dist; tr a-z A-Z < /src/in.txt > /dist/upper.txt",
            ]
        )
    )
    expect(await c.file("/src/out.txt").contents(), "hello\nB", "file written into the mount")
    expect(await c.directory("/src").entries(), ["in.txt", "out.txt", "sub/"], "mount entries")
    expect(await c.directory("/dist").entries(), ["upper.txt"], "entries of a directory the exec made")
    expect(await c.file("/dist/upper.txt").contents(), "HELLO\n", "file the exec made")
    expect(await c.mounts(), ["/src"], "mounts")
    # The directory passed in is unchanged: the mount is a copy-on-write view.
    expect(await src.entries(), ["in.txt", "sub/"], "source directory entries")


async def check_cache_volume_across_execs(reg: str, scratch: pathlib.Path) -> None:
    cache = dag.cache_volume("py-cache")
    base = busybox(reg).with_mounted_cache("/cache", cache).with_env_variable("RUN", RUN)
    c = base.with_exec(["sh", "-c", "echo $RUN > /cache/stamp-$RUN"]).with_exec(
        ["sh", "-c", "cat /cache/stamp-$RUN"]
    )
    expect(await c.stdout(), f"{RUN}\n", "the second exec reads the first one's file")
    # Another container mounting the same volume sees it too; the file is not in the image.
    other = (
        busybox(reg)
        .with_mounted_cache("/cache", dag.cache_volume("py-cache"))
        .with_env_variable("RUN", RUN)
        .with_exec(["sh", "-c", "cat /cache/stamp-$RUN"])
    )
    expect(await other.stdout(), f"{RUN}\n", "another container on the same volume")
    unmounted = c.without_mount("/cache").with_exec(["sh", "-c", "ls /cache 2>/dev/null | wc -l"])
    expect((await unmounted.stdout()).strip(), "0", "files in /cache without the mount")


async def check_secret_variable(reg: str, scratch: pathlib.Path) -> None:
    c = (
        busybox(reg)
        .with_secret_variable("TOKEN", dag.set_secret("t", "s3cret"))
        .with_exec(["sh", "-c", 'echo token=$TOKEN; test "$TOKEN" = s3cret && echo match'])
    )
    expect(await c.stdout(), "token=***\nmatch\n", "stdout")
    # The secret is not an ordinary variable of the container.
    expect(await c.env_variable("TOKEN"), None, "env_variable of a secret")


async def check_exec_error(reg: str, scratch: pathlib.Path) -> None:
    cmd = ["sh", "-c", "echo out; echo err >&2; exit 3"]
    try:
        await busybox(reg).with_exec(cmd).sync()
    except dagger.ExecError as e:
        expect(e.exit_code, 3, "exit_code")
        expect(e.stdout, "out\n", "stdout")
        expect(e.stderr, "err\n", "stderr")
        expect(e.command, cmd, "command")
        if "exit code: 3" not in e.message:
            raise AssertionError(f"the message does not give the exit code: {e.message!r}") from e
    else:
        raise AssertionError("`exit 3` succeeded; expected dagger.ExecError")
    # With expect=ANY the same kind of command succeeds and reports its code.
    anyway = busybox(reg).with_exec(["sh", "-c", "exit 5"], expect=dagger.ReturnType.ANY)
    expect(await anyway.exit_code(), 5, "exit_code with expect=ANY")


async def check_export_tarball(reg: str, scratch: pathlib.Path) -> None:
    out = scratch / "image.tar"
    c = busybox(reg).with_new_file("/marker", "exported\n")
    path = await c.export(str(out))
    expect(pathlib.Path(path).resolve(), out.resolve(), "export returns the path written")
    if not out.is_file() or out.stat().st_size == 0:
        raise AssertionError(f"no tarball at {out}")
    with tarfile.open(out) as tar:
        names = tar.getnames()
    for wanted in ("oci-layout", "index.json"):
        if wanted not in names:
            raise AssertionError(f"{wanted} missing from the tarball: {names}")
    # The engine reads it back.
    back = dag.container().import_(dag.host().file(str(out))).with_exec(["cat", "/marker"])
    expect(await back.stdout(), "exported\n", "stdout of the imported tarball")


async def check_publish_and_pull_back(reg: str, scratch: pathlib.Path) -> None:
    address = f"{reg}/py-app:latest"
    c = (
        busybox(reg)
        .with_new_file("/app/msg.txt", f"published {RUN}\n")
        .with_env_variable("APP_MODE", "py")
        .with_workdir("/app")
    )
    published = await c.publish(address)
    # As Dagger reports it: the reference with its tag and the digest pushed.
    if not re.fullmatch(rf"{re.escape(reg)}/py-app:latest@sha256:[0-9a-f]{{64}}", published):
        raise AssertionError(f"publish returned {published!r}, not {reg}/py-app:latest@sha256:…")
    for ref in (published, address):
        pulled = dag.container().from_(ref).with_exec(["sh", "-c", "cat msg.txt; echo $APP_MODE"])
        expect(await pulled.stdout(), f"published {RUN}\npy\n", f"stdout of {ref}")


async def expect_error(awaitable, wanted: str, what: str) -> None:
    try:
        await awaitable
    except dagger.DaggerError as e:
        if wanted not in str(e):
            raise AssertionError(f"{what}: the error does not say {wanted!r}: {e}") from e
    else:
        raise AssertionError(f"{what}: succeeded; expected an error saying {wanted!r}")


async def check_supplementary_groups(reg: str, scratch: pathlib.Path) -> None:
    c = (
        busybox(reg)
        .with_new_file("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
        .with_new_file("/etc/group", "root:x:0:\nwheel:x:10:root\nstaff:x:50:app\napp:x:1000:\n")
    )
    groups = lambda user: c.with_user(user).with_exec(["id", "-G"]).stdout()  # noqa: E731
    expect(await groups("app"), "1000 50\n", "the primary group and the groups listing the user")
    expect(await groups("app:staff"), "50\n", "an explicit group is the only one")
    expect(await c.with_exec(["id", "-G"]).stdout(), "0 10\n", "root's groups")


async def check_redirects_through_mounts(reg: str, scratch: pathlib.Path) -> None:
    src = dag.directory().with_new_file("in.txt", "from a mount\n")
    c = (
        busybox(reg)
        .with_mounted_directory("/out", dag.directory())
        .with_mounted_directory("/in", src)
        .with_mounted_file("/f", dag.file("f", "a mounted file\n"))
        .with_mounted_secret("/run/s", dag.set_secret("s", "hunter2"))
        .with_env_variable("D", "/tmp")
        .with_workdir("/tmp")
    )
    r = c.with_exec(
        ["sh", "-c", "cat; echo oops >&2"],
        redirect_stdin="/in/in.txt",
        redirect_stdout="/out/o.txt",
        redirect_stderr="e.txt",
    )
    expect(await r.directory("/out").entries(), ["o.txt"], "stdout into a mounted directory")
    expect(await r.file("/out/o.txt").contents(), "from a mount\n", "stdin from a mounted directory")
    expect(await r.file("/tmp/e.txt").contents(), "oops\n", "stderr against the workdir")
    x = c.with_exec(["echo", "hi"], redirect_stdout="${D}/x", expand=True)
    expect(await x.file("/tmp/x").contents(), "hi\n", "expand applies to redirect paths")
    expect(await c.with_exec(["cat"], redirect_stdin="/f").stdout(), "a mounted file\n", "stdin from a mounted file")
    n = await c.with_exec(["wc", "-c"], redirect_stdin="/run/s").stdout()
    expect(n.strip(), "7", "stdin from a mounted secret")


async def check_expand(reg: str, scratch: pathlib.Path) -> None:
    c = busybox(reg).with_env_variable("T", "/etc/passwd").with_env_variable("L", "/link")
    linked = c.with_symlink("${T}", "${L}", expand=True)
    expect(await linked.with_exec(["readlink", "/link"]).stdout(), "/etc/passwd\n", "withSymlink expands both")
    secret = c.with_secret_variable("S", dag.set_secret("s", "x"))
    await expect_error(
        secret.with_symlink("/x", "${S}", expand=True).sync(),
        'expand cannot be used with secret env variable "S"',
        "a secret variable in expand",
    )


async def check_mounted_files_and_secrets(reg: str, scratch: pathlib.Path) -> None:
    # Dagger's TestWithFileOnMountedFile: withFile at a mounted file's path replaces what is read there.
    d = dag.directory().with_new_file("f1", "1").with_new_file("f2", "2")
    c = busybox(reg).with_mounted_directory("/mnt", d).with_mounted_file("/mnt/f2", dag.file("f3", "3"))
    expect(await c.file("/mnt/f2").contents(), "3", "the mounted file")
    expect(await c.with_file("/mnt/f2", dag.file("f4", "4")).file("/mnt/f2").contents(), "4", "withFile onto it")
    # A mount point itself: unmounted first.
    on_point = busybox(reg).with_mounted_directory("/mnt2", d).with_file("/mnt2", dag.file("f", "f"))
    expect(await on_point.mounts(), [], "withFile onto a mount point unmounts it")
    expect(await on_point.file("/mnt2").contents(), "f", "the file lands below")
    # Secret mounts are kept apart: a later file mount hides the secret on read-back, execs still see it.
    secret = dag.set_secret("tok", "s3cret")
    only = busybox(reg).with_mounted_secret("/run/tok", secret)
    await expect_error(only.file("/run/tok").contents(), "tok: no such file or directory", "a secret is not read")
    both = only.with_mounted_file("/run/tok", dag.file("tok", "file"))
    expect(await both.file("/run/tok").contents(), "file", "the file mount is read back")
    seen = await both.with_exec(["sh", "-c", 'test "$(cat /run/tok)" = s3cret && echo secret']).stdout()
    expect(seen, "secret\n", "the exec sees the secret")


async def check_cache_volume_defaults(reg: str, scratch: pathlib.Path) -> None:
    seed = dag.directory().with_new_file("seeded", "x")
    volume = dag.cache_volume(f"py-defaults-{RUN}", sharing=dagger.CacheSharingMode.LOCKED, source=seed, owner="1000")
    base = busybox(reg).with_env_variable("RUN", RUN).with_mounted_cache("/c", volume)
    owned = await base.with_exec(["sh", "-c", "stat -c %u /c; ls /c"]).stdout()
    expect(owned, "1000\nseeded\n", "the volume's source and owner")
    step = "if [ -e /c/busy ]; then echo overlap; exit 1; fi; touch /c/busy; sleep 0.5; rm /c/busy; echo {}"
    a = base.with_exec(["sh", "-c", step.format("a")]).stdout()
    b = base.with_exec(["sh", "-c", step.format("b")]).stdout()
    expect(await asyncio.gather(a, b), ["a\n", "b\n"], "LOCKED from the volume: one exec at a time")


async def check_mount_stubs_and_modes(reg: str, scratch: pathlib.Path) -> None:
    before = busybox(reg)
    after = (
        before.with_mounted_directory("/src", dag.directory().with_new_file("a", "a"))
        .with_mounted_cache("/deep/cache", dag.cache_volume(f"py-stubs-{RUN}"))
        .with_mounted_file("/opt/f", dag.file("f", "f"))
        .with_exec(["true"])
    )
    expect(await before.rootfs().diff(after.rootfs()).glob("**"), [], "an exec that changes nothing")
    sub = dag.directory().with_new_directory("p", permissions=0o700).with_new_file("p/f", "x").directory("p")
    out = (
        before.with_mounted_directory("/m", sub)
        .with_directory("/copied", sub)
        .with_new_file("/tmp/x", "")
        .with_exec(["stat", "-c", "%a %n", "/m", "/copied", "/tmp"])
    )
    expect(await out.stdout(), "700 /m\n700 /copied\n1777 /tmp\n", "directories keep their own modes")
    src = scratch / "times"
    src.mkdir(parents=True, exist_ok=True)
    (src / "f").write_text("x")
    os.utime(src / "f", (499162500, 499162500))
    t = before.with_directory("/h", dag.host().directory(str(src))).with_exec(["stat", "-c", "%Y", "/h/f"])
    expect(await t.stdout(), "499162500\n", "a host file keeps its time")


async def check_paths_and_wording(reg: str, scratch: pathlib.Path) -> None:
    c = busybox(reg)
    expect(await c.with_new_file("/tmp", "x").file("/tmp/tmp").contents(), "x", "withNewFile onto a directory")
    await expect_error(c.stdout(), "no command has been set", "stdout before any exec")
    await expect_error(c.stderr(), "no command has been set", "stderr before any exec")
    await expect_error(
        c.with_exec(["true"], expect=dagger.ReturnType.FAILURE).sync(),
        'process "true" did not complete successfully: exit code: 0',
        "expect failure, exit 0",
    )
    m = (
        c.with_mounted_directory("/mnt/dir", dag.directory().with_new_file("some-file", "x"))
        .with_mounted_temp("/mnt/tmp")
        .with_mounted_cache("/mnt/cache", dag.cache_volume(f"py-wording-{RUN}"))
    )
    for field, path, wanted in [
        ("directory", "/mnt/dir/some-file", "path /mnt/dir/some-file is a file, not a directory"),
        ("file", "/mnt/dir", "path /mnt/dir is a directory, not a file"),
        ("file", "/mnt/dir/bogus", "bogus: no such file or directory"),
        ("directory", "/bar", "bar: no such file or directory"),
        ("file", "/mnt/tmp/bogus", "bogus: cannot retrieve path from tmpfs"),
        ("directory", "/mnt/cache/bogus", "bogus: cannot retrieve path from cache"),
    ]:
        await expect_error(getattr(m, field)(path).sync(), wanted, f"{field}({path})")


CHECKS = [
    check_env_workdir_and_exec,
    check_load_container_from_id,
    check_paths_like_dagger,
    check_mounted_directory_and_results,
    check_cache_volume_across_execs,
    check_secret_variable,
    check_exec_error,
    check_export_tarball,
    check_publish_and_pull_back,
    check_supplementary_groups,
    check_redirects_through_mounts,
    check_expand,
    check_mounted_files_and_secrets,
    check_cache_volume_defaults,
    check_mount_stubs_and_modes,
    check_paths_and_wording,
]


async def main() -> int:
    reg = os.environ.get(REGISTRY_VAR, "")
    if not reg:
        print(f"set {REGISTRY_VAR} to a registry host holding busybox:latest", file=sys.stderr)
        return 2
    failed = 0
    async with dagger.connection(dagger.Config(log_output=sys.stderr)):
        with tempfile.TemporaryDirectory() as tmp:
            for check in CHECKS:
                try:
                    await check(reg, pathlib.Path(tmp))
                except Exception:  # noqa: BLE001 - every failure is reported, then counted
                    failed += 1
                    print(f"FAIL [containers] {check.__name__}", flush=True)
                    traceback.print_exc(file=sys.stdout)
                else:
                    print(f"ok   [containers] {check.__name__}", flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(1 if asyncio.run(main()) else 0)
