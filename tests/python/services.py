"""Service pipelines through the official Python SDK: `dagger-rs run python services.py`.

DRS_TEST_REGISTRY names a plain-HTTP registry (such as `127.0.0.1:5000`) that already holds
`busybox:latest` (with `httpd`, `wget` and `nc`). The script runs containers as services (`as_service`,
`with_exposed_port`), reaches them from other containers by alias and by host name (`with_service_binding`,
`hostname`, `endpoint`, `with_hostname`), keeps one running across dependents (`start`, `stop`), reaches one
from the host (`host().tunnel`, `up`) and the host from a container (`host().service`). Each check prints
`ok` or `FAIL`; any failure makes the exit code non-zero.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import socket
import sys
import threading
import time
import traceback
import urllib.request

import dagger
from checks import expect
from dagger import dag

REGISTRY_VAR = "DRS_TEST_REGISTRY"
# Distinguishes this run's services and execs (cached by their inputs) from earlier runs'.
RUN = f"{os.getpid()}-{time.time_ns()}"
PAGE = "hello from the python service\n"


def busybox(reg: str) -> dagger.Container:
    return (
        dag.container()
        .from_(f"{reg}/busybox:latest")
        .with_env_variable("RUN", RUN)
        .with_new_file("/srv/index.html", PAGE)
    )


def web(reg: str, port: int = 8080) -> dagger.Service:
    """An HTTP server on `port` serving /srv."""
    return (
        busybox(reg)
        .with_exposed_port(port, description="web")
        .as_service(args=["httpd", "-f", "-p", str(port), "-h", "/srv"])
    )


def fetch(reg: str, alias: str, svc: dagger.Service, url: str, tag: str = "") -> dagger.Container:
    """A client bound to `svc` as `alias` that prints what `url` serves; `tag` makes the exec its own."""
    return (
        busybox(reg)
        .with_service_binding(alias, svc)
        .with_exec(["sh", "-c", f"wget -q -O- {url} && : {tag}"])
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def check_binding_hostname_endpoint_and_ports(reg: str) -> None:
    svc = web(reg)
    host = await svc.hostname()
    if not (host and host.isalnum() and host.lower() == host):
        raise AssertionError(f"hostname {host!r}")
    expect(await svc.endpoint(), f"{host}:8080", "endpoint")
    expect(await svc.endpoint(scheme="http"), f"http://{host}:8080", "endpoint with a scheme")
    expect(await svc.endpoint(port=9000), f"{host}:9000", "endpoint of another port")
    ports = await svc.ports()
    expect(len(ports), 1, "number of ports")
    expect(await ports[0].port(), 8080, "port")
    expect(await ports[0].protocol(), dagger.NetworkProtocol.TCP, "protocol")
    expect(await ports[0].description(), "web", "description")
    expect(await ports[0].experimental_skip_healthcheck(), False, "experimental_skip_healthcheck")
    by_alias = fetch(reg, "www", svc, "http://www:8080/index.html", "alias")
    expect(await by_alias.stdout(), PAGE, "a client reaches the service by its alias")
    by_name = fetch(reg, "www", svc, f"http://{host}:8080/index.html", "name")
    expect(await by_name.stdout(), PAGE, "a client reaches the service by its host name")
    # The ID loads the same service back.
    loaded = dag.load_service_from_id(dagger.ServiceID(await svc.id()))
    expect(await loaded.hostname(), host, "hostname of a loaded service")
    # A declared port can be removed again, by port and protocol.
    two = busybox(reg).with_exposed_port(8080).with_exposed_port(53, protocol=dagger.NetworkProtocol.UDP)
    left = await two.without_exposed_port(8080).without_exposed_port(53).exposed_ports()
    expect([(await p.port(), await p.protocol()) for p in left], [(53, dagger.NetworkProtocol.UDP)], "without_exposed_port")


async def check_default_command_and_entrypoint(reg: str) -> None:
    # No args: the default arguments (behind the entrypoint) are the service's command.
    base = busybox(reg).with_exposed_port(8081)
    by_default = base.with_default_args(["httpd", "-f", "-p", "8081", "-h", "/srv"]).as_service()
    out = fetch(reg, "web", by_default, "http://web:8081/index.html", "default").stdout()
    expect(await out, PAGE, "a service running the default command")
    entry = (
        base.with_entrypoint(["httpd", "-f", "-h", "/srv"])
        .as_service(args=["-p", "8081"], use_entrypoint=True)
    )
    out = fetch(reg, "web", entry, "http://web:8081/index.html", "entrypoint").stdout()
    expect(await out, PAGE, "a service behind its entrypoint (use_entrypoint)")
    # `expand` reads the container's environment.
    expanded = (
        base.with_env_variable("PORT", "8081")
        .as_service(args=["httpd", "-f", "-p", "${PORT}", "-h", "/srv"], expand=True)
    )
    out = fetch(reg, "web", expanded, "http://web:8081/index.html", "expand").stdout()
    expect(await out, PAGE, "a service whose args are expanded")


async def check_with_hostname(reg: str) -> None:
    named = web(reg).with_hostname("web-py")
    expect(await named.hostname(), "web-py", "with_hostname")
    out = fetch(reg, "other", named, "http://web-py:8080/index.html", "named").stdout()
    expect(await out, PAGE, "a client reaches the service by the name it was given")


async def check_concurrent_dependents_and_a_service_binding_a_service(reg: str) -> None:
    svc = web(reg)
    a = fetch(reg, "www", svc, "http://www:8080/index.html", "a").stdout()
    b = fetch(reg, "web", svc, "http://web:8080/index.html", "b").stdout()
    expect(list(await asyncio.gather(a, b)), [PAGE, PAGE], "two dependents at once")
    # A service that copies the first one's page at start, then serves the copy.
    mirror = (
        busybox(reg)
        .with_service_binding("origin", svc)
        .with_exposed_port(8082)
        .as_service(
            args=[
                "sh",
                "-c",
                "wget -q -O /srv/copy.html http://origin:8080/index.html && exec httpd -f -p 8082 -h /srv",
            ]
        )
    )
    out = fetch(reg, "mirror", mirror, "http://mirror:8082/copy.html", "chain").stdout()
    expect(await out, PAGE, "a service reaches the service it binds")


async def check_start_keeps_one_instance_until_stop(reg: str) -> None:
    # Each instance appends a line to a file in a cache volume, then serves that volume.
    state = dag.cache_volume(f"py-service-state-{RUN}")
    svc = (
        busybox(reg)
        .with_mounted_cache("/state", state)
        .with_exposed_port(8080)
        .as_service(args=["sh", "-c", "echo started >> /state/starts; exec httpd -f -p 8080 -h /state"])
    )
    started = await svc.start()
    expect(await started.hostname(), await svc.hostname(), "start returns the service")
    first = await fetch(reg, "db", svc, "http://db:8080/starts", "first").stdout()
    second = await fetch(reg, "db", svc, "http://db:8080/starts", "second").stdout()
    expect([first, second], ["started\n", "started\n"], "one instance served both dependents")
    await svc.stop(kill=True)
    # Stopped, the next dependent starts it again.
    again = await fetch(reg, "db", svc, "http://db:8080/starts", "again").stdout()
    expect(again, "started\nstarted\n", "a new instance after stop")


async def check_a_failed_service_fails_its_dependent(reg: str) -> None:
    broken = (
        busybox(reg)
        .with_exposed_port(5432)
        .as_service(args=["sh", "-c", "echo config is missing >&2; exit 3"])
    )
    try:
        await busybox(reg).with_service_binding("db", broken).with_exec(["echo", "never runs"]).stdout()
    except dagger.QueryError as e:
        if "config is missing" not in str(e) or "db" not in str(e):
            raise AssertionError(f"the error does not show the service's output and alias: {e}") from e
    else:
        raise AssertionError("a dependent of a service that exited ran")
    # No command at all (an empty container has no default command) is refused when the service is asked
    # about, before anything runs.
    try:
        await dag.container().as_service().hostname()
    except dagger.QueryError as e:
        if "no service command" not in str(e):
            raise AssertionError(f"unexpected error: {e}") from e
    else:
        raise AssertionError("a service without a command was accepted")


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - loopback URL built here
        return r.read().decode()


async def check_the_host_reaches_a_service(reg: str) -> None:
    svc = web(reg)
    tunnel = dag.host().tunnel(svc)
    endpoint = await tunnel.endpoint()
    if not endpoint.startswith("127.0.0.1:"):
        raise AssertionError(f"tunnel endpoint {endpoint!r}")
    body = await asyncio.to_thread(http_get, f"http://{endpoint}/index.html")
    expect(body, PAGE, "GET through Host.tunnel")

    # `up` forwards a port of the host until the service stops.
    port = free_port()
    up = asyncio.create_task(svc.up(ports=[dagger.PortForward(backend=8080, frontend=port)]))
    deadline = time.monotonic() + 30
    while True:
        try:
            body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/index.html")
            break
        except OSError:
            if up.done() or time.monotonic() > deadline:
                raise AssertionError(f"`up` did not open port {port}: {up}") from None
            await asyncio.sleep(0.1)
    expect(body, PAGE, "GET through Service.up")
    await svc.stop(kill=True)
    await asyncio.wait_for(up, 30)


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        body = f"host says hi to {self.path}".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


async def check_a_container_reaches_the_host(reg: str) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        svc = dag.host().service([dagger.PortForward(backend=server.server_address[1], frontend=80)])
        out = await fetch(reg, "host", svc, "http://host/x", "host").stdout()
        expect(out, "host says hi to /x", "a container reaches a port of the host by alias")
    finally:
        server.shutdown()
        server.server_close()


CHECKS = [
    check_binding_hostname_endpoint_and_ports,
    check_default_command_and_entrypoint,
    check_with_hostname,
    check_concurrent_dependents_and_a_service_binding_a_service,
    check_start_keeps_one_instance_until_stop,
    check_a_failed_service_fails_its_dependent,
    check_the_host_reaches_a_service,
    check_a_container_reaches_the_host,
]


async def main() -> int:
    reg = os.environ.get(REGISTRY_VAR, "")
    if not reg:
        print(f"set {REGISTRY_VAR} to a registry host holding busybox:latest", file=sys.stderr)
        return 2
    failed = 0
    async with dagger.connection(dagger.Config(log_output=sys.stderr)):
        for check in CHECKS:
            try:
                await check(reg)
            except Exception:  # noqa: BLE001 - every failure is reported, then counted
                failed += 1
                print(f"FAIL [services] {check.__name__}", flush=True)
                traceback.print_exc(file=sys.stdout)
            else:
                print(f"ok   [services] {check.__name__}", flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(1 if asyncio.run(main()) else 0)
