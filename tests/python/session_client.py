"""The SDK starts the engine itself: `_EXPERIMENTAL_DAGGER_CLI_BIN=<dagger-rs> python session_client.py`.

The SDK runs `<dagger-rs> session --label … --workdir …`, reads the JSON handshake line, and closes the
session's stdin when the connection ends; the script checks the session exited cleanly.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import sys
import tempfile

import dagger
from checks import run_checks


async def main() -> int:
    if not os.environ.get("_EXPERIMENTAL_DAGGER_CLI_BIN"):
        print("set _EXPERIMENTAL_DAGGER_CLI_BIN to the dagger-rs binary", file=sys.stderr)
        return 2
    for var in ("DAGGER_SESSION_PORT", "DAGGER_SESSION_TOKEN"):
        os.environ.pop(var, None)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = pathlib.Path(tmp)
        (scratch / "in-workdir.txt").write_text("relative")
        config = dagger.Config(workdir=str(scratch), log_output=sys.stderr)
        async with dagger.Connection(config) as client:
            failed = await run_checks(client, scratch, "session")
            # `--workdir` given by the SDK is where relative host paths resolve.
            entries = await client.host().directory(".").entries()
            if "in-workdir.txt" not in entries:
                print(f"FAIL [session] relative host paths: {entries}")
                failed += 1
            else:
                print("ok   [session] relative host paths resolve against --workdir")
    return failed


if __name__ == "__main__":
    sys.exit(1 if asyncio.run(main()) else 0)
