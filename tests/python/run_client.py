"""A program started by the engine: `dagger-rs run python run_client.py`.

It finds the session through DAGGER_SESSION_PORT and DAGGER_SESSION_TOKEN, queries `{version}` over raw
HTTP as the protocol describes, then runs the checks with the SDK's global `dag` client.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pathlib
import sys
import tempfile
import urllib.request

import dagger
from checks import run_checks
from dagger import dag


def raw_version() -> str:
    port, token = os.environ["DAGGER_SESSION_PORT"], os.environ["DAGGER_SESSION_TOKEN"]
    auth = base64.b64encode(f"{token}:".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/query",
        data=json.dumps({"query": "{version}"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"},
    )
    with urllib.request.urlopen(request) as response:  # noqa: S310 - loopback only
        return json.load(response)["data"]["version"]


async def main() -> int:
    missing = [v for v in ("DAGGER_SESSION_PORT", "DAGGER_SESSION_TOKEN") if not os.environ.get(v)]
    if missing:
        print(f"not started by `dagger-rs run`: {', '.join(missing)} unset", file=sys.stderr)
        return 2
    failed = 0
    version = raw_version()
    if version.startswith("dagger-rs-engine v"):
        print("ok   [run] raw {version} query")
    else:
        print(f"FAIL [run] raw {{version}} query answered {version!r}")
        failed += 1
    async with dagger.connection(dagger.Config(log_output=sys.stderr)):
        sdk_version = await dag.version()
        if sdk_version != version:
            print(f"FAIL [run] dag.version() {sdk_version!r} != {version!r}")
            failed += 1
        with tempfile.TemporaryDirectory() as tmp:
            failed += await run_checks(dag, pathlib.Path(tmp), "run")
    return failed


if __name__ == "__main__":
    sys.exit(1 if asyncio.run(main()) else 0)
