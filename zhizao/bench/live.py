"""`zhizao bench live`: simulator event -> dashboard, the latency an operator sees.

One seeded line runs for real: the OPC UA simulator (its site only) and the line's edge agent as
subprocesses, the broker, and the cloud service (ingest -> OEE service -> live hub -> SSE) in this process.
The bench calls the simulator's `Stop` and `Start` methods on one machine over OPC UA and times, per call:

- total: until the matching `state` event arrives at an SSE client of `/api/v1/live` (what the browser gets);
- baseline: until the edge agent's DDATA carrying the new `State` reaches the broker (simulator step,
  OPC UA subscription and Sparkplug publishing; the part the cloud cannot make faster);
- dashboard (with `--browser PATH`): until the machine page's state badge, open in headless Chromium, shows
  the new state's label. Before each call the bench arms a MutationObserver in the page that records
  `Date.now()` when a new `#state` badge with the new state appears in the DOM (before the next paint,
  at most one frame later); the bench takes `time.time()` just before the OPC UA call. Both read the same
  machine's wall clock (CLOCK_REALTIME), so dashboard = DOM time - call time, to about 1 ms.

It reports p50/p99 of each and of the cloud's share (total - baseline), and total / baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import importlib.resources
import json
import os
import queue
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml

from zhizao.bench.harness import (
    Report,
    json_option,
    latency_summary,
    machine_line,
    require,
    times,
)
from zhizao.broker.embedded import BrokerError, free_port, wait_listening
from zhizao.broker.sparkplug.codec import decode
from zhizao.broker.sparkplug.topics import MessageType, device_topic
from zhizao.edge.sim.security import PASSWORD_ENV

if TYPE_CHECKING:
    from playwright.async_api import Page

AGENTS_DIR = importlib.resources.files("zhizao.seeds") / "agents"  # the packaged example agent configs
_PY = [sys.executable, "-c", "from zhizao.cli import main; main()"]
SIM_USER = ("bench-live", secrets.token_urlsafe(12))  # the bench calls Stop/Start as this simulator user
# What Debian's Chromium needs to run headless here (as in the dashboard's browser tests).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


class _Sse:
    """An SSE client in a thread: (arrival perf_counter, data) of every `state` event."""

    def __init__(self, port: int, token: str) -> None:
        self.events: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.opened = threading.Event()
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self._conn.request("GET", f"/api/v1/live?token={token}")
        self._thread = threading.Thread(target=self._run, name="bench-sse", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            r = self._conn.getresponse()
            if r.status != 200:
                return
            self.opened.set()
            kind = ""
            while raw := r.readline():
                line = raw.decode().rstrip("\n")
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:") and kind == "state":
                    self.events.put((time.perf_counter(), json.loads(line[5:])))
                elif not line:
                    kind = ""
        except (OSError, http.client.HTTPException):
            pass

    def close(self) -> None:
        if self._conn.sock is not None:
            self._conn.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self._conn.close()


class _Wire:
    """Watches the machine's DDATA on the broker: (arrival perf_counter, State value) of each State sample."""

    def __init__(self, mqtt_url: str, site: str, line: str, machine: str) -> None:
        from zhizao.bench.tap import BrokerTap

        self.states: queue.Queue[tuple[float, int]] = queue.Queue()
        self._alias: int | None = None
        topics = [str(device_topic(site, kind, line, machine)) for kind in (MessageType.DBIRTH, MessageType.DDATA)]
        self._tap = BrokerTap(mqtt_url, "live", topics, self._on_message)

    def _on_message(self, topic: str, payload: bytes) -> None:
        arrived = time.perf_counter()
        d = decode(payload)
        if "/DBIRTH/" in topic:
            for i, name in enumerate(d.names):
                if name == "State":
                    self._alias = int(d.alias[i])
            return
        for i in range(d.n):
            if (d.names[i] == "State" or (self._alias is not None and int(d.alias[i]) == self._alias)) \
                    and not d.is_historical[i]:
                self.states.put((arrived, int(d.value[i])))

    def close(self) -> None:
        self._tap.close()


# Armed before each call: records when a new #state badge (machine.js replaces it per `state` event) shows a
# state on the expected side (stopped: 40000..49999, the rule the SSE matcher uses) with its label.
_ARM = """(stop) => {
  window.__zzBench?.observer.disconnect();
  const armed = document.getElementById("state");
  const bench = { seen: null, observer: null };
  bench.observer = new MutationObserver(() => {
    const badge = document.getElementById("state");
    if (bench.seen || !badge || badge === armed || badge.dataset.stateCode === "") return;
    const code = Number(badge.dataset.stateCode);
    const label = badge.querySelector(".state-name")?.textContent ?? "";
    if ((code >= 40000 && code < 50000) === stop && label) {
      bench.seen = { t: Date.now(), code, label };
      bench.observer.disconnect();
    }
  });
  bench.observer.observe(document.body, { childList: true, subtree: true });
  window.__zzBench = bench;
}"""


class _Dashboard:
    """The machine page in headless Chromium: arm before a call, then the wall time the badge changed."""

    def __init__(self, page: Page) -> None:
        self.page = page

    async def arm(self, stop: bool) -> None:
        await self.page.evaluate(_ARM, stop)

    async def seen(self, within_s: float) -> tuple[float, str] | None:
        """Wall-clock time (s since the epoch, the page's Date.now()) of the change and the label shown."""
        from playwright.async_api import Error as PlaywrightError

        try:
            await self.page.wait_for_function("window.__zzBench.seen !== null", timeout=within_s * 1000)
        except PlaywrightError:
            return None
        seen = await self.page.evaluate("window.__zzBench.seen")
        return float(seen["t"]) / 1000.0, str(seen["label"])


@contextlib.asynccontextmanager
async def _open_dashboard(browser_path: str, url: str, token: str, site: str, machine: str
                          ) -> AsyncIterator[_Dashboard]:
    """The machine page of `machine`, signed in with `token` (kept in sessionStorage, as the login form does)."""
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        try:
            browser = await p.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        except PlaywrightError as exc:
            raise click.ClickException(f"--browser {browser_path}: Chromium did not start: {exc}") from exc
        try:
            context = await browser.new_context(viewport={"width": 1366, "height": 768}, locale="en-US")
            await context.add_init_script(f"sessionStorage.setItem('zhizao.token', {json.dumps(token)})")
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{url}/ui/#/site/{site}/machine/{machine}")
            try:
                await page.locator("#state:not([data-state-code=''])").wait_for(timeout=30_000)
                await page.locator(".live-on").wait_for(timeout=30_000)
            except PlaywrightError as exc:
                raise click.ClickException(f"the dashboard's machine page did not show {site}/{machine} with the "
                                           f"live stream on within 30 s; page errors: {errors}") from exc
            yield _Dashboard(page)
        finally:
            await browser.close()


def _first(q: queue.Queue[tuple[float, Any]], match: Any, timeout: float) -> float:
    """Arrival time of the first queued item that matches, dropping the others."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        arrived, item = q.get(timeout=left)
        if match(item):
            return arrived


def _drain(q: queue.Queue[Any]) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return


async def _toggle(endpoint: str, node: str, events: int, sse: _Sse, wire: _Wire, machine: str,
                  pause_s: float, page: contextlib.AbstractAsyncContextManager[_Dashboard] | None,
                  ) -> tuple[list[float], list[float], list[float], dict[str, int]]:
    """Stop/Start calls: per event the SSE and broker latency (s); with a page, the DOM latency and labels shown."""
    from asyncua.client.client import Client  # only the bench drives the simulator from the cloud side

    total: list[float] = []
    base: list[float] = []
    dom: list[float] = []
    labels: dict[str, int] = {}
    async with contextlib.AsyncExitStack() as stack:
        dash = await stack.enter_async_context(page) if page is not None else None
        client = Client(endpoint, timeout=10)
        client.set_user(SIM_USER[0])  # the simulator refuses anonymous method calls
        client.set_password(SIM_USER[1])
        await stack.enter_async_context(client)
        obj = client.get_node(node)
        for i in range(events):
            stop = i % 2 == 0
            _drain(sse.events)
            _drain(wire.states)
            if dash is not None:
                await dash.arm(stop)
            called = time.time()
            started = time.perf_counter()
            await obj.call_method("2:Stop" if stop else "2:Start")

            def stopped(code: int) -> bool:
                return 40000 <= code < 50000

            def changed(code: int, stop: bool = stop) -> bool:
                return stopped(code) if stop else not stopped(code)

            try:
                on_wire = await asyncio.to_thread(_first, wire.states, changed, 10.0)
                seen = await asyncio.to_thread(
                    _first, sse.events, lambda e, c=changed: e.get("machine") == machine and c(int(e["code"])), 10.0)
            except TimeoutError:
                click.echo(f"  event {i + 1}: no {'stop' if stop else 'start'} seen within 10 s; skipped", err=True)
                continue
            base.append(on_wire - started)
            total.append(seen - started)
            if dash is not None:
                # Also waits for the page to settle before the next call arms it again.
                shown = await dash.seen(10.0)
                if shown is None:
                    click.echo(f"  event {i + 1}: the dashboard did not show the "
                               f"{'stop' if stop else 'start'} within 10 s", err=True)
                else:
                    dom.append(shown[0] - called)
                    labels[shown[1]] = labels.get(shown[1], 0) + 1
            await asyncio.sleep(pause_s)
    return total, base, dom, labels


@click.command("live")
@click.option("--database-url", envvar="ZHIZAO_DATABASE_URL", required=True,
              help="PostgreSQL the cloud service writes to (env ZHIZAO_DATABASE_URL).")
@click.option("--mqtt-url", envvar="ZHIZAO_MQTT_URL", default="mqtt://127.0.0.1:1883", show_default=True,
              help="Broker shared by the edge agent and the cloud.")
@click.option("--line", "line", default="pack-1", show_default=True, help="Seeded line (seeds/agents/LINE.yaml).")
@click.option("--events", type=click.IntRange(2, 1000), default=20, show_default=True,
              help="Stop/Start calls (alternating).")
@click.option("--dt-ms", type=click.IntRange(10, 1000), default=100, show_default=True,
              help="Simulator step: a Stop takes effect at the next step.")
@click.option("--browser", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Also time to the state badge of the machine page in this headless Chromium "
                   "(Debian's is /usr/bin/chromium); needs Playwright (the bench extra).")
@json_option
def bench_live(database_url: str, mqtt_url: str, line: str, events: int, dt_ms: int, browser: str | None,
               json_path: Path | None) -> None:
    """Simulator Stop/Start -> `state` event at an SSE client of /api/v1/live (and the dashboard): p50/p99."""
    import logging

    if browser is not None:  # Playwright drives the Chromium at --browser; it never downloads a browser
        require("zhizao bench live --browser", "bench", "playwright.async_api")

    from zhizao.cloud.auth import create_token
    from zhizao.cloud.ingest.settings import IngestSettings
    from zhizao.cloud.service import CloudService
    from zhizao.cloud.settings import CloudSettings

    logging.basicConfig(level=logging.ERROR)
    agent_file = AGENTS_DIR / f"{line}.yaml"
    if not agent_file.is_file():
        known = sorted(f.name.removesuffix(".yaml") for f in AGENTS_DIR.iterdir() if f.name.endswith(".yaml"))
        raise click.BadParameter(f"no seeded agent config for line {line!r}; seeded lines: {', '.join(known)}",
                                 param_hint="--line")
    agent = yaml.safe_load(agent_file.read_text())
    site, machine = agent["site"], agent["machines"][0]["id"]
    work = Path(tempfile.mkdtemp(prefix="zhizao-bench-live-"))
    sim_port = free_port()
    endpoint = f"opc.tcp://127.0.0.1:{sim_port}/zhizao/sim"
    agent["mqtt"]["url"] = mqtt_url
    agent["outbox"]["dir"] = str(work / "outbox")
    for adapter in agent["adapters"]:
        adapter["endpoint"] = endpoint
    (work / "agent.yaml").write_text(yaml.safe_dump(agent))

    procs: list[subprocess.Popen[bytes]] = []
    service = CloudService(CloudSettings(database_url=database_url, mqtt_url=mqtt_url, host_id="zhizao-bench-live",
                                         api_port=0), ingest_settings=IngestSettings(sites=(site,)))
    click.echo(f"bench live: line {site}/{line}, machine {machine}, {events} events, sim step {dt_ms} ms", err=True)
    log = (work / "procs.log").open("ab")  # the children's output; closed once they are gone
    try:
        procs.append(subprocess.Popen([*_PY, "sim", "--site", site, "--port", str(sim_port), "--dt-ms", str(dt_ms),
                                       "--user", SIM_USER[0]], stdout=log, stderr=subprocess.STDOUT,
                                      env={**os.environ, PASSWORD_ENV: SIM_USER[1]}))  # fmt: skip
        try:
            wait_listening(sim_port, lambda: procs[0].poll() is None, "simulator", timeout=90)
        except BrokerError as exc:
            raise click.ClickException(str(exc)) from None
        service.start_in_thread()
        assert service.port is not None
        token = create_token(database_url, "viewer", [site], "bench-live")
        wire = _Wire(mqtt_url, site, line, machine)
        sse = _Sse(service.port, token)
        if not sse.opened.wait(10):
            raise click.ClickException("the live stream did not open")
        procs.append(subprocess.Popen([*_PY, "edge", "run", str(work / "agent.yaml")], stdout=log,
                                      stderr=subprocess.STDOUT))
        # Warm-up: the agent's birth, the OEE service learning the machine, numba kernels compiled.
        deadline = time.monotonic() + 120
        while not sse.events.qsize() and time.monotonic() < deadline:
            if procs[1].poll() is not None:
                raise click.ClickException(f"edge agent exited with {procs[1].returncode}; see {work / 'procs.log'}")
            time.sleep(0.5)
        time.sleep(2.0)
        node = f"ns=2;s={site}/{line}/{machine}"
        page = None if browser is None else _open_dashboard(browser, service.url, token, site, machine)
        total, base, dom, labels = asyncio.run(
            _toggle(endpoint, node, events, sse, wire, machine, pause_s=0.3, page=page))
        sse.close()
        wire.close()
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)  # reaped: a killed child left unwaited stays a zombie
        service.stop()
        log.close()
    if len(total) < 2:
        raise click.ClickException(f"only {len(total)} events measured; see {work / 'procs.log'}")
    cloud = [t - b for t, b in zip(total, base, strict=True)]
    rows = {"baseline": base, "total": total, "cloud": cloud}
    if browser is not None and dom:
        rows["dashboard"] = dom
    report = Report("live")
    f = report.figures
    f.update(line=f"{site}/{line}", target=machine, sim_step_ms=dt_ms, events=events, measured=len(total))
    f.update({k: latency_summary([1000.0 * x for x in v]) for k, v in rows.items()})
    total_x = report.ratio("total_vs_baseline_p50", "total.p50_ms", "baseline.p50_ms")
    if browser is not None:
        f.update(browser=browser, dashboard_seen=len(dom), dashboard_labels=labels)
    click.echo(machine_line(report.finish(database_url)))
    click.echo(f"events measured: {len(total)} of {events}")
    click.echo(f"{'':34}{'p50 ms':>10}{'p99 ms':>10}")
    for key, label in (("baseline", "baseline: sim -> DDATA on broker"), ("total", "total: sim -> SSE state event"),
                       ("cloud", "cloud share (total - baseline)"), ("dashboard", "dashboard: sim -> badge in DOM")):
        if key in f:
            click.echo(f"{label:34}{f[key]['p50_ms']:10.0f}{f[key]['p99_ms']:10.0f}")
    click.echo(f"total / baseline at p50: {times(total_x)}")
    if browser is not None:
        click.echo(f"dashboard events seen: {len(dom)} of {len(total)}")
        if dom:
            dash_x = report.ratio("dashboard_vs_baseline_p50", "dashboard.p50_ms", "baseline.p50_ms")
            click.echo(f"dashboard / baseline at p50: {times(dash_x)}")
    report.write(json_path)
    if browser is None:
        click.echo("next: open the dashboard (`zhizao demo` prints its URL) and watch a machine page")
    else:
        click.echo("next: `zhizao demo` and open a machine page to see the same badge change")
