// The official TypeScript SDK starts the engine itself:
//   _EXPERIMENTAL_DAGGER_CLI_BIN=<dagger-rs> node tests/ts/session_client.mjs
//
// The SDK runs `<dagger-rs> session --workdir … --label …`, reads the JSON handshake line, and at the end of
// `connection()` sends SIGTERM to the CLI (it never closes the CLI's stdin). If the CLI dies from the signal,
// the SDK's pending subprocess promise rejects and Node.js exits with code 1 on the unhandled rejection; so
// this program exiting 0 means the session ended cleanly. With DRS_TEST_REGISTRY naming a registry that holds
// busybox:latest, it also runs a container pipeline.
//
// Each check prints `ok   …` or `FAIL …`; a failure makes the exit code non-zero. The program also prints
// `engine pid: N` (the CLI process the SDK started) and `connection closed` once `connection()` returned.
// The SDK is loaded from target/ts-sdk, where scripts/ts-sdk.sh --setup installs it.

import { createRequire } from "node:module";
import { mkdtempSync, readFileSync, readdirSync, readlinkSync, realpathSync, rmSync, writeFileSync } from "node:fs";
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
const { connection, dag, ExistsType } = sdk;

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
