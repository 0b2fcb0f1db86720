// The official TypeScript SDK starts the engine itself:
//   _EXPERIMENTAL_DAGGER_CLI_BIN=<dagger-rs> node tests/ts/session_client.mjs
//
// The SDK runs `<dagger-rs> session --workdir … --label …`, reads the JSON handshake line, and at the end of
// `connection()` sends SIGTERM to the CLI (it never closes the CLI's stdin). If the CLI dies from the signal,
// the SDK's pending subprocess promise rejects and Node.js exits with code 1 on the unhandled rejection; so
// this program exiting 0 means the session ended cleanly. With DRS_TEST_REGISTRY naming a registry that holds
// busybox:latest, it also runs container pipelines. Besides the common API it checks the behaviours that follow
// the real engine (gitignore, modes, times, redirects, groups, `expand`, mounted files and secrets, cache volume
// defaults, mount stubs, Dagger's error wording, `publish`'s tag and digest).
//
// Each check prints `ok   …` or `FAIL …`; a failure makes the exit code non-zero. The program also prints
// `engine pid: N` (the CLI process the SDK started) and `connection closed` once `connection()` returned.
// The SDK is loaded from target/ts-sdk, where scripts/ts-sdk.sh --setup installs it.

import { createRequire } from "node:module";
import {
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const sdkDir = fileURLToPath(new URL("../../target/ts-sdk/", import.meta.url));
let sdk;
try {
  const resolve = createRequire(join(sdkDir, "package.json")).resolve;
  sdk = await import(pathToFileURL(resolve("@dagger.io/dagger")).href);
} catch (e) {
  console.error(`the TypeScript SDK is not installed in ${sdkDir}: run scripts/ts-sdk.sh --setup (${e})`);
  process.exit(2);
}
const { connection, dag, CacheSharingMode, ExistsType, ReturnType } = sdk;

const cli = process.env._EXPERIMENTAL_DAGGER_CLI_BIN;
if (!cli) {
  console.error("set _EXPERIMENTAL_DAGGER_CLI_BIN to the dagger-rs binary");
  process.exit(2);
}
delete process.env.DAGGER_SESSION_PORT;
delete process.env.DAGGER_SESSION_TOKEN;

let failed = 0;
function expect(what, got, want) {
  if (JSON.stringify(got) === JSON.stringify(want)) {
    console.log(`ok   ${what}`);
  } else {
    console.log(`FAIL ${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    failed += 1;
  }
}

// Expects `promise` to fail with an error whose message holds `wanted`.
async function expectError(what, promise, wanted) {
  let error = "";
  try {
    await promise;
  } catch (e) {
    error = String(e?.message ?? e);
  }
  if (error.includes(wanted)) {
    console.log(`ok   ${what}`);
  } else {
    console.log(`FAIL ${what}: got ${JSON.stringify(error)}, want an error saying ${JSON.stringify(wanted)}`);
    failed += 1;
  }
}

/** Writes `files` (relative path -> contents) under `root`. */
function writeTree(root, files) {
  for (const [rel, text] of Object.entries(files)) {
    const path = join(root, rel);
    mkdirSync(join(path, ".."), { recursive: true });
    writeFileSync(path, text);
  }
}

// A check that throws is reported and counted; the next one still runs.
async function check(what, body) {
  try {
    await body();
  } catch (e) {
    console.log(`FAIL ${what}: ${e?.stack ?? e}`);
    failed += 1;
  }
}

/** The processes whose parent is this one and whose executable is the CLI the SDK was told to start. */
function engineChildren() {
  const want = realpathSync(cli);
  const found = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so fields start after the last `)`.
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === process.pid && readlinkSync(`/proc/${name}/exe`) === want) found.push(Number(name));
    } catch {
      // The process is gone, or not ours to read.
    }
  }
  return found;
}

const scratch = mkdtempSync(join(tmpdir(), "drs-ts-"));
writeFileSync(join(scratch, "in-workdir.txt"), "relative");
try {
  await connection(
    async () => {
      const engines = engineChildren();
      expect("the SDK started one dagger-rs session", engines.length, 1);
      console.log(`engine pid: ${engines[0]}`);

      await check("directory().withNewFile().file().contents()", async () => {
        const text = await dag.directory().withNewFile("hello.txt", "hi").file("hello.txt").contents();
        expect("directory().withNewFile().file().contents()", text, "hi");
      });

      await check("a directory passed by ID", async () => {
        const inner = dag.directory().withNewFile("a.txt", "A").withNewFile("sub/b.txt", "B");
        const outer = dag.directory().withDirectory("src", inner);
        expect("a directory passed by ID", await outer.entries({ path: "src" }), ["a.txt", "sub/"]);
        // `sync` loads the object back through `node(id:)`; building on it must work.
        const synced = await inner.sync();
        expect("building on a synced directory", await synced.withNewFile("c.txt", "C").entries(), [
          "a.txt",
          "c.txt",
          "sub/",
        ]);
        const file = await synced.file("sub/b.txt").sync();
        const withFile = dag.directory().withFile("copy.txt", file);
        expect("a synced file passed by ID", await withFile.file("copy.txt").contents(), "B");
      });

      await check("dag.loadDirectoryFromID / loadFileFromID", async () => {
        // The SDK's generated loaders send the legacy `loadFooFromID(id:)` fields.
        const d = dag.directory().withNewFile("a.txt", "A").withNewDirectory("sub");
        const loaded = dag.loadDirectoryFromID(await d.id());
        expect("entries of a loaded directory", await loaded.entries(), ["a.txt", "sub/"]);
        expect("building on a loaded directory", await loaded.withNewFile("b.txt", "B").entries(), [
          "a.txt",
          "b.txt",
          "sub/",
        ]);
        const fileId = await d.file("a.txt").id();
        expect("contents of a loaded file", await dag.loadFileFromID(fileId).contents(), "A");
        let error = "";
        try {
          await dag.loadDirectoryFromID(fileId).entries();
        } catch (e) {
          error = String(e?.message ?? e);
        }
        expect(
          "loading a File ID as a Directory names both types",
          error.includes("File") && error.includes("Directory"),
          true,
        );
      });

      await check("paths like Dagger", async () => {
        // Removal patterns, withFile into a directory, directories in glob, exists and symlinks, bare file names.
        const d = dag
          .directory()
          .withNewFile("foo.txt", "")
          .withNewFile("b/foo.txt", "")
          .withNewFile("b/data.json", "")
          .withNewFile("a1/x", "")
          .withNewFile("a2/y", "");
        expect("withoutFile b/*.txt", await d.withoutFile("b/*.txt").entries({ path: "b" }), ["data.json"]);
        expect("withoutDirectory a*", await d.withoutDirectory("a*").entries(), ["b/", "foo.txt"]);
        expect("withoutFiles with patterns", await d.withoutFiles(["*.txt", "b/*.none", "missing"]).entries(), [
          "a1/",
          "a2/",
          "b/",
        ]);
        expect("glob marks directories", await d.glob("*"), ["a1/", "a2/", "b/", "foo.txt"]);
        const f = dag.directory().withNewFile("sub/some-file", "data").file("sub/some-file");
        for (const root of ["", ".", "/"]) {
          expect(`withFile(${JSON.stringify(root)})`, await dag.directory().withFile(root, f).entries(), ["some-file"]);
        }
        const linked = d.withSymlink("foo.txt", "link");
        expect(
          "exists follows a link",
          await linked.exists("link", { expectedType: ExistsType.RegularType }),
          true,
        );
        expect(
          "the symlink check sees the link",
          await linked.exists("link", { expectedType: ExistsType.SymlinkType }),
          true,
        );
        expect(
          "doNotFollowSymlinks looks at the link",
          await linked.exists("link", { expectedType: ExistsType.RegularType, doNotFollowSymlinks: true }),
          false,
        );
        let error = "";
        try {
          await dag.file("dir/some-file", "x").contents();
        } catch (e) {
          error = String(e?.message ?? e);
        }
        expect("a file name with a directory is an error", error.includes("must not contain a directory"), true);
      });

      await check("gitignore", async () => {
        // Dagger's TestDirectoryGitIgnore: every .gitignore from the nearest `.git` down, relative to its folder.
        const repo = join(scratch, "gitignore-repo");
        mkdirSync(join(repo, ".git"), { recursive: true });
        writeTree(repo, {
          ".gitignore": "**.txt\n.git/\n!subdir/e.txt\n*.md\nbar/\n",
          "b.md": "2",
          "c.txt.rar": "3",
          "subdir/e.txt": "2",
          "subdir/g.txt": "6",
          "subdir/h.yaml": "6",
          "subdir2/.gitignore": "*.yaml\n.gitignore\n",
          "subdir2/foo.go": "1",
          "subdir2/bool.yaml": "1",
          "bar/bar.txt": "1",
        });
        const d = dag.host().directory(repo, { gitignore: true });
        expect("gitignore: root entries", await d.entries(), [".gitignore", "c.txt.rar", "subdir/", "subdir2/"]);
        expect("gitignore: a negation re-includes", await d.directory("subdir").entries(), ["e.txt", "h.yaml"]);
        expect("gitignore: a nested .gitignore", await d.directory("subdir2").entries(), ["foo.go"]);
        const sub = dag.host().directory(join(repo, "subdir"), { gitignore: true });
        expect("gitignore: a parent's rules apply below it", await sub.entries(), ["e.txt", "h.yaml"]);
        const excluded = dag.host().directory(repo, { gitignore: true, exclude: [".gitignore"] });
        expect("gitignore: an excluded .gitignore still applies", await excluded.entries(), [
          "c.txt.rar",
          "subdir/",
          "subdir2/",
        ]);
        await expectError(
          "gitignore: an ignored path is not found",
          dag.host().directory(join(repo, "bar"), { gitignore: true }).entries(),
          "bar: no such file or directory",
        );
        const plain = join(scratch, "gitignore-plain");
        writeTree(plain, { ".gitignore": "**/**", "foo.go": "1" });
        expect("gitignore: no .git, no rules", await dag.host().directory(plain, { gitignore: true }).entries(), [
          ".gitignore",
          "foo.go",
        ]);
        const own = dag.directory().withNewFile(".gitignore", "b.txt\n").withNewFile("a.txt", "").withNewFile("b.txt", "");
        expect("Directory.filter(gitignore)", await own.filter({ gitignore: true }).entries(), [".gitignore", "a.txt"]);
      });

      await check("directories keep their own mode", async () => {
        const sub = dag.directory().withNewDirectory("p", { permissions: 0o700 }).withNewFile("p/f", "x").directory("p");
        expect("directory(path) keeps its mode", await sub.stat(".").permissions(), 0o700);
        expect(
          "a copy to a new path keeps its mode",
          await dag.directory().withDirectory("new", sub).stat("new").permissions(),
          0o700,
        );
      });

      await check("host files keep their times", async () => {
        const src = join(scratch, "times");
        writeTree(src, { f: "x" });
        utimesSync(join(src, "f"), 499162500, 499162500);
        const out = join(scratch, "times-out");
        await dag.host().directory(src).export(out);
        expect("host files keep their times", Math.floor(statSync(join(out, "f")).mtimeMs / 1000), 499162500);
      });

      await check("error wording", async () => {
        const d = dag.directory().withNewFile("a/f", "x").withNewDirectory("b");
        await expectError("wording: a missing directory", d.directory("/foo").sync(), "/foo: no such file or directory");
        await expectError(
          "wording: a missing file, the path as given",
          d.file("keep/../this").sync(),
          "keep/../this: no such file or directory",
        );
        await expectError("wording: a directory as a file", d.file("a").sync(), "path a is a directory, not a file");
        await expectError(
          "wording: a file as a directory",
          d.directory("a/f").sync(),
          "path a/f is a file, not a directory",
        );
        await expectError(
          "wording: outside its parent",
          d.directory("b").withNewDirectory("../c").sync(),
          "cannot create directory outside parent: ../c",
        );
        await expectError(
          "wording: a removal pattern in a missing directory",
          d.withoutFiles(["*.txt", "nothing/*"]).sync(),
          "nothing: no such file or directory",
        );
      });

      await check("relative host paths resolve against --workdir", async () => {
        const entries = await dag.host().directory(".").entries();
        expect("relative host paths resolve against --workdir", entries.includes("in-workdir.txt"), true);
      });

      await check("export to the host", async () => {
        const out = join(scratch, "exported");
        await dag.directory().withNewFile("x.txt", "exported\n").export(out);
        expect("export to the host", readFileSync(join(out, "x.txt"), "utf8"), "exported\n");
      });

      const registry = process.env.DRS_TEST_REGISTRY;
      if (registry) {
        await check("a container pipeline", async () => {
          const src = dag.directory().withNewFile("in.txt", "hello\n");
          const c = dag
            .container()
            .from(`${registry}/busybox:latest`)
            .withEnvVariable("GREETING", "hi from ts")
            .withMountedDirectory("/src", src)
            .withWorkdir("/work")
            .withExec(["sh", "-c", 'echo "$GREETING"; cat /src/in.txt; echo made > out.txt']);
          expect("container stdout", await c.stdout(), "hi from ts\nhello\n");
          expect("container exitCode", await c.exitCode(), 0);
          expect("a file the exec made", await c.file("/work/out.txt").contents(), "made\n");
          const loaded = dag.loadContainerFromID(await c.id());
          expect("dag.loadContainerFromID: workdir", await loaded.workdir(), "/work");
          expect(
            "dag.loadContainerFromID: exec on the loaded container",
            await loaded.withExec(["cat", "out.txt"]).stdout(),
            "made\n",
          );
        });
        await check("containers like Dagger", async () => {
          const bb = () => dag.container().from(`${registry}/busybox:latest`);
          const run = `${process.pid}-${Date.now()}`;
          // Supplementary groups.
          const users = bb()
            .withNewFile("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
            .withNewFile("/etc/group", "root:x:0:\nwheel:x:10:root\nstaff:x:50:app\napp:x:1000:\n");
          expect("groups: the user's", await users.withUser("app").withExec(["id", "-G"]).stdout(), "1000 50\n");
          expect(
            "groups: an explicit group only",
            await users.withUser("app:staff").withExec(["id", "-G"]).stdout(),
            "50\n",
          );
          // Redirects through mounts.
          const c = bb()
            .withMountedDirectory("/out", dag.directory())
            .withMountedDirectory("/in", dag.directory().withNewFile("in.txt", "from a mount\n"))
            .withMountedSecret("/run/s", dag.setSecret("s", "hunter2"))
            .withEnvVariable("D", "/tmp")
            .withWorkdir("/tmp");
          const r = c.withExec(["sh", "-c", "cat; echo oops >&2"], {
            redirectStdin: "/in/in.txt",
            redirectStdout: "/out/o.txt",
            redirectStderr: "e.txt",
          });
          expect("redirect: stdout into a mounted directory", await r.directory("/out").entries(), ["o.txt"]);
          expect("redirect: stdin from a mounted directory", await r.file("/out/o.txt").contents(), "from a mount\n");
          expect("redirect: against the workdir", await r.file("/tmp/e.txt").contents(), "oops\n");
          const x = c.withExec(["echo", "hi"], { redirectStdout: "${D}/x", expand: true });
          expect("redirect: expanded", await x.file("/tmp/x").contents(), "hi\n");
          const n = await c.withExec(["wc", "-c"], { redirectStdin: "/run/s" }).stdout();
          expect("redirect: stdin from a mounted secret", n.trim(), "7");
          // expand.
          const e = bb().withEnvVariable("T", "/etc/passwd").withEnvVariable("L", "/link");
          expect(
            "expand: withSymlink expands both",
            await e.withSymlink("${T}", "${L}", { expand: true }).withExec(["readlink", "/link"]).stdout(),
            "/etc/passwd\n",
          );
          await expectError(
            "expand: a secret variable is refused",
            e.withSecretVariable("S", dag.setSecret("s", "x")).withSymlink("/x", "${S}", { expand: true }).sync(),
            'expand cannot be used with secret env variable "S"',
          );
          // Mounted files and secrets.
          const m = bb()
            .withMountedDirectory("/mnt", dag.directory().withNewFile("f1", "1").withNewFile("f2", "2"))
            .withMountedFile("/mnt/f2", dag.file("f3", "3"));
          expect(
            "mounts: withFile onto a mounted file",
            await m.withFile("/mnt/f2", dag.file("f4", "4")).file("/mnt/f2").contents(),
            "4",
          );
          const both = bb()
            .withMountedSecret("/run/tok", dag.setSecret("tok", "s3cret"))
            .withMountedFile("/run/tok", dag.file("tok", "file"));
          expect("mounts: a file mount hides the secret on read-back", await both.file("/run/tok").contents(), "file");
          expect(
            "mounts: the exec sees the secret",
            await both.withExec(["sh", "-c", 'test "$(cat /run/tok)" = s3cret && echo secret']).stdout(),
            "secret\n",
          );
          // Cache volume defaults.
          const volume = dag.cacheVolume(`ts-defaults-${run}`, {
            sharing: CacheSharingMode.Locked,
            source: dag.directory().withNewFile("seeded", "x"),
            owner: "1000",
          });
          const cached = bb().withEnvVariable("RUN", run).withMountedCache("/c", volume);
          expect(
            "cache: the volume's source and owner",
            await cached.withExec(["sh", "-c", "stat -c %u /c; ls /c"]).stdout(),
            "1000\nseeded\n",
          );
          const step = (me) =>
            cached
              .withExec(["sh", "-c", `if [ -e /c/busy ]; then echo overlap; exit 1; fi; touch /c/busy; sleep 0.5; rm /c/busy; echo ${me}`])
              .stdout();
          expect("cache: LOCKED from the volume", await Promise.all([step("a"), step("b")]), ["a\n", "b\n"]);
          // Mount stubs, modes.
          const after = bb()
            .withMountedDirectory("/src", dag.directory().withNewFile("a", "a"))
            .withMountedCache("/deep/cache", dag.cacheVolume(`ts-stubs-${run}`))
            .withExec(["true"]);
          expect("stubs: an exec that changes nothing", await bb().rootfs().diff(after.rootfs()).glob("**"), []);
          const p = dag.directory().withNewDirectory("p", { permissions: 0o700 }).withNewFile("p/f", "x").directory("p");
          expect(
            "modes: mounted, copied, written below",
            await bb()
              .withMountedDirectory("/m", p)
              .withDirectory("/copied", p)
              .withNewFile("/tmp/x", "")
              .withExec(["stat", "-c", "%a %n", "/m", "/copied", "/tmp"])
              .stdout(),
            "700 /m\n700 /copied\n1777 /tmp\n",
          );
          // Paths and wording.
          expect("withNewFile onto a directory", await bb().withNewFile("/tmp", "x").file("/tmp/tmp").contents(), "x");
          await expectError("wording: stdout before any exec", bb().stdout(), "no command has been set");
          await expectError(
            "wording: expect failure, exit 0",
            bb().withExec(["true"], { expect: ReturnType.Failure }).sync(),
            'process "true" did not complete successfully: exit code: 0',
          );
          const mm = bb()
            .withMountedDirectory("/mnt/dir", dag.directory().withNewFile("some-file", "x"))
            .withMountedTemp("/mnt/tmp")
            .withMountedCache("/mnt/cache", dag.cacheVolume(`ts-wording-${run}`));
          await expectError(
            "wording: a file as a directory",
            mm.directory("/mnt/dir/some-file").sync(),
            "path /mnt/dir/some-file is a file, not a directory",
          );
          await expectError(
            "wording: a directory as a file",
            mm.file("/mnt/dir").sync(),
            "path /mnt/dir is a directory, not a file",
          );
          await expectError(
            "wording: tmpfs",
            mm.file("/mnt/tmp/bogus").sync(),
            "bogus: cannot retrieve path from tmpfs",
          );
          await expectError(
            "wording: cache",
            mm.directory("/mnt/cache/bogus").sync(),
            "bogus: cannot retrieve path from cache",
          );
          const published = await bb().withNewFile("/ts", run).publish(`${registry}/ts-app:v1`);
          expect(
            "publish returns the tag and the digest",
            published.startsWith(`${registry}/ts-app:v1@sha256:`),
            true,
          );
        });
      } else {
        console.log("skip container pipeline: set DRS_TEST_REGISTRY to a registry holding busybox:latest");
      }
    },
    { LogOutput: process.stderr, Workdir: scratch },
  );
  console.log("connection closed");
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

process.on("exit", (code) => console.log(`node exits with code ${code}`));
if (failed > 0) {
  console.log(`${failed} check(s) failed`);
  process.exitCode = 1;
}
