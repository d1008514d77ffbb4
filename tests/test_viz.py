"""Kedro-Viz shows the whole DAG: ``kedro viz run`` in headless Chromium, ``kedro viz build``.

Needs Debian's ``chromium`` (``make test`` installs it); without it these tests fail.
"""

from __future__ import annotations

import functools
import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from browser import chromium, kedro, open_viz, viz_server
from conftest import copy_project
from kedro.framework.project import configure_project
from playwright.sync_api import Page

from compactkd.pipeline_registry import register_pipelines

pytestmark = pytest.mark.slow

STAGES = {"data_processing", "teacher", "block_search", "distillation", "evaluation", "reporting"}


@pytest.fixture(scope="module")
def viz_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory.mktemp("viz") / "project")


@pytest.fixture(scope="module")
def node_labels(viz_project: Path) -> dict[str, Counter[str]]:
    """Every registered pipeline's nodes, named as Kedro-Viz labels them (no namespace)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(viz_project)
        configure_project("compactkd")
        pipelines = register_pipelines()
    assert STAGES | {"__default__"} <= set(pipelines)
    return {
        name: Counter(node.name.rpartition(".")[2] for node in pipeline.nodes)
        for name, pipeline in pipelines.items()
    }


def drawn_nodes(page: Page) -> tuple[Counter[str], str]:
    """The task nodes' labels in the flowchart, and the flowchart's whole text."""
    labels = page.locator(".pipeline-flowchart .pipeline-node--task .pipeline-node__text")
    return Counter(labels.all_text_contents()), page.locator(".pipeline-flowchart").inner_text()


def assert_every_node_drawn(page: Page, node_labels: dict[str, Counter[str]]) -> None:
    drawn, text = drawn_nodes(page)
    for stage, labels in node_labels.items():
        missing = sorted(labels - drawn) + [label for label in labels if label not in text]
        assert not missing, f"{stage}: nodes {missing} not drawn; drawn: {sorted(drawn)}"
    assert drawn == node_labels["__default__"]  # the whole DAG, namespaced copies included


def test_viz_run_draws_every_node_of_every_stage(
    viz_project: Path, node_labels: dict[str, Counter[str]]
) -> None:
    with viz_server(viz_project) as url, chromium() as browser:
        assert_every_node_drawn(open_viz(browser, url), node_labels)


@contextmanager
def static_server(site: Path) -> Iterator[str]:
    """``site`` over HTTP on a free localhost port (the page fetches its ``api/`` files)."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=site))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


def test_viz_build_writes_a_static_site_of_every_stage(
    viz_project: Path, node_labels: dict[str, Counter[str]]
) -> None:
    kedro(viz_project, "viz", "build")
    site = viz_project / "build"
    index = (site / "index.html").read_text()
    assert "<title>Kedro-Viz</title>" in index
    assert "./assets/index-" in index
    assert all((site / ref).is_file() for ref in ("favicon.ico", "api/main", "api/version"))
    for name, labels in node_labels.items():
        api = site / "api" / ("main" if name == "__default__" else f"pipelines/{name}")
        written = json.loads(api.read_text())
        assert written["selected_pipeline"] == name
        assert Counter(n["name"] for n in written["nodes"] if n["type"] == "task") == labels
    with static_server(site) as url, chromium() as browser:
        assert_every_node_drawn(open_viz(browser, url), node_labels)
