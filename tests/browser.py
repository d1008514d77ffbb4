"""Debian's headless Chromium, driven by Playwright, and a ``kedro viz run`` server, offline.

Shared by ``tests/test_viz.py`` and ``docs/screenshots.py``. Never a downloaded browser:
Playwright launches the system's ``chromium`` (``apt-get install chromium``), so
``playwright install`` is never needed.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, Route, sync_playwright

CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root in a container
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Kedro-Viz's settings, kept in localStorage: no onboarding tour, nothing over the graph,
# every modular pipeline (each stage, each ``budget_k`` in it) collapsed to one node, Kedro-Viz's
# default (``open_viz(..., expand_all=True)`` draws every node), layers shown.
VIZ_SETTINGS = {
    "showFeatureHints": False,
    "expandAllPipelines": False,
    "layer": {"visible": True},
    "orientation": "vertical",
    "theme": "light",
    "visible": {"sidebar": False, "miniMap": False},
}

# Kedro-Viz asks PyPI for its latest version, at start-up and on every /api/version, with
# a blocking request of timeout 30 s. A proxy on a closed local port makes that fail at once,
# offline or not, and Kedro-Viz carries on; NO_PROXY keeps localhost direct.
OFFLINE_ENV = {
    "KEDRO_DISABLE_TELEMETRY": "1",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}

# The flowchart is drawn: node labels faded in, no loading icon.
GRAPH_DRAWN = """() => {
    const labels = [...document.querySelectorAll('.pipeline-flowchart .pipeline-node__text')];
    return !document.querySelector('.pipeline-loading-icon--visible') && labels.length > 0
        && labels.every(label => getComputedStyle(label).opacity === '1');
}"""

# What the flowchart draws, in the graph's coordinates: every node (``id`` is Kedro-Viz's
# node id, a modular pipeline's its namespace; ``y`` its centre), every layer band (top ``y``
# and ``height``) under its label, in the order drawn, and the zoom.
GRAPH_GEOMETRY = """() => {
    const chart = document.querySelector('.pipeline-flowchart');
    const nodes = [...chart.querySelectorAll('.pipeline-node')].map(g => {
        const at = g.transform.baseVal.consolidate().matrix;
        const text = g.querySelector('.pipeline-node__text');
        return {id: g.dataset.id, type: g.dataset.nodeType, x: at.e, y: at.f,
                text: text ? text.textContent : null, opacity: g.getAttribute('opacity')};
    });
    const names = [...chart.querySelectorAll('.pipeline-layer-name')].map(li => li.textContent);
    const bands = [...chart.querySelectorAll('.pipeline-layer')].map((rect, i) => ({
        name: names[i], y: rect.y.baseVal.value, height: rect.height.baseVal.value}));
    const zoom = chart.querySelector('.pipeline-zoom-wrapper');
    return {nodes, layers: bands, layerNames: names,
            zoom: zoom ? zoom.getAttribute('transform') : null};
}"""


def kedro(project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``kedro <args>`` in ``project``, offline; raises with its output if it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "kedro", *args],
        cwd=project, env={**os.environ, **OFFLINE_ENV},
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"kedro {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def free_port() -> int:
    """A free localhost port that Kedro-Viz accepts: not above 49151, so not the OS's pick."""
    for port in random.sample(range(20_000, 32_000), 100):  # below Linux's ephemeral ports
        with socket.socket() as s, suppress(OSError):
            s.bind(("127.0.0.1", port))
            return port
    raise RuntimeError("no free localhost port in 20000-31999")


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never OFFLINE_ENV's proxy


def _answers(url: str) -> bool:
    try:
        with _DIRECT.open(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def fetch_json(url: str) -> Any:
    """The JSON at a localhost ``url`` (e.g. Kedro-Viz's ``api/main``), fetched directly."""
    with _DIRECT.open(url, timeout=60) as response:
        return json.load(response)


@contextmanager
def viz_server(project: Path, timeout: float = 120) -> Iterator[str]:
    """``kedro viz run --no-browser`` in ``project`` on a free localhost port; yields its URL.

    Kedro-Viz serves from a child process: the command runs in a process group of its own,
    killed as a whole on exit.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [sys.executable, "-m", "kedro", "viz", "run", "--no-browser",
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(
            command, cwd=project, env={**os.environ, **OFFLINE_ENV},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + timeout
            while not _answers(url + "api/main"):
                if server.poll() is not None or time.monotonic() > deadline:
                    state = "no answer" if server.poll() is None else f"exit {server.returncode}"
                    log.seek(0)
                    raise RuntimeError(
                        f"kedro viz run: {state} from {url}api/main within {timeout:.0f} s. "
                        f"Its output:\n{log.read()}"
                    )
                time.sleep(0.5)
            yield url
        finally:
            _kill_group(server)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group, SIGKILL to whatever is left of it after 10 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:  # the whole group is gone
            break
        if sig == signal.SIGTERM:
            with suppress(subprocess.TimeoutExpired):
                process.wait(10)
    process.wait()


def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        raise RuntimeError(
            "Debian's Chromium is missing (no `chromium` on PATH, no /usr/bin/chromium): "
            "run `make chromium` (or `sudo apt-get install chromium`; `make test` installs it)."
        )
    return path


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless."""
    path = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _offline(route: Route) -> None:
    """Local requests only: the Internet's (Kedro-Viz's web fonts) fail at once."""
    url = urllib.parse.urlsplit(route.request.url)
    local = url.scheme in ("file", "data") or url.hostname in ("127.0.0.1", "localhost")
    if local and url.path.endswith("/api/version"):
        # Offline, Kedro-Viz answers that PyPI's version "None" is newer and shows a banner.
        version = importlib.metadata.version("kedro-viz")
        route.fulfill(json={"installed": version, "is_outdated": False, "latest": version})
    elif local:
        route.continue_()
    else:
        route.abort()


def new_page(browser: Browser, width: int, height: int, scale: float = 1) -> Page:
    """A blank page of this viewport, in a context of its own that only reaches localhost."""
    context = browser.new_context(
        viewport={"width": width, "height": height}, device_scale_factor=scale
    )
    context.route("**/*", _offline)
    return context.new_page()


def open_viz(
    browser: Browser,
    url: str,
    width: int = 1600,
    height: int = 1000,
    scale: float = 1,
    *,
    expand_all: bool = False,
) -> Page:
    """Kedro-Viz at ``url``, with :data:`VIZ_SETTINGS`, once its flowchart is drawn and fitted.

    ``expand_all``: every modular pipeline expanded, every node drawn (else one node a stage).
    """
    page = new_page(browser, width, height, scale)
    settings = json.dumps(json.dumps({**VIZ_SETTINGS, "expandAllPipelines": expand_all}))
    page.add_init_script(f"window.localStorage.setItem('KedroViz', {settings})")
    page.goto(url, wait_until="domcontentloaded")
    wait_drawn(page)
    return page


def graph_geometry(page: Page) -> dict[str, Any]:
    """The flowchart's nodes and layer bands as drawn: see :data:`GRAPH_GEOMETRY`."""
    return page.evaluate(GRAPH_GEOMETRY)


def wait_drawn(page: Page, timeout: float = 60) -> dict[str, Any]:
    """Wait until the flowchart is drawn and still (layout, fade-in, zoom-to-fit all done).

    Returns its :func:`graph_geometry`.
    """
    page.wait_for_function(GRAPH_DRAWN, timeout=timeout * 1000)
    deadline = time.monotonic() + timeout
    before = graph_geometry(page)
    while True:
        page.wait_for_timeout(400)
        now = graph_geometry(page)
        if now == before:
            return now
        if time.monotonic() > deadline:
            raise TimeoutError(f"the flowchart still moves after {timeout:.0f} s")
        before = now
