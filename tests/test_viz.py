"""Kedro-Viz draws the DAG readably: ``kedro viz run`` in headless Chromium, ``kedro viz build``.

Every stage is a modular pipeline (a Kedro namespace), drawn collapsed to one node until
clicked; every catalog entry has a Kedro data layer, so the flowchart reads top-down from
``raw`` to ``reporting`` in labelled bands. Expected nodes and groups come from the pipeline
registry, expected layers from the catalog.

Needs Debian's ``chromium`` (``make test`` installs it); without it these tests fail.
"""

from __future__ import annotations

import functools
import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from browser import chromium, fetch_json, kedro, open_viz, viz_server, wait_drawn
from helpers import copy_project
from kedro.config import OmegaConfigLoader
from kedro.framework.project import configure_project, settings
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline
from playwright.sync_api import Page

from compactkd.pipeline_registry import register_pipelines

pytestmark = pytest.mark.slow

STAGES = {"data_processing", "teacher", "block_search", "distillation", "evaluation", "reporting"}
LAYERS = ["raw", "model_input", "models", "model_output", "reporting"]  # Kedro's, top-down
ROOT = "__root__"  # Kedro-Viz's id of the tree of modular pipelines' root


@pytest.fixture(scope="module")
def viz_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory.mktemp("viz") / "project")


@pytest.fixture(scope="module")
def pipelines(viz_project: Path) -> dict[str, Pipeline]:
    """Every registered pipeline, as ``kedro viz`` in ``viz_project`` builds them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(viz_project)
        configure_project("compactkd")
        registered = register_pipelines()
    assert STAGES | {"__default__"} <= set(registered)
    return registered


@pytest.fixture(scope="module")
def catalog(viz_project: Path, pipelines: dict[str, Pipeline]) -> DataCatalog:
    """``viz_project``'s catalog (``pipelines`` configured the project's settings)."""
    conf = viz_project / settings.CONF_SOURCE
    loader = OmegaConfigLoader(str(conf), **settings.CONFIG_LOADER_ARGS)
    return DataCatalog.from_config(loader["catalog"])


@dataclass
class Group:
    """A modular pipeline: the nodes of exactly its namespace, its child modular pipelines."""

    nodes: set[str] = field(default_factory=set)
    children: set[str] = field(default_factory=set)


def groups(pipeline: Pipeline) -> dict[str, Group]:
    """``pipeline``'s namespaces as Kedro-Viz nests them (``ROOT``: the nodes of none)."""
    tree: dict[str, Group] = defaultdict(Group)
    for node in pipeline.nodes:
        namespace = node.namespace or ROOT
        tree[namespace].nodes.add(node.name)
        parent = ROOT
        for prefix in node.namespace_prefixes:  # "a", "a.b", ... for namespace "a.b..."
            tree[parent].children.add(prefix)
            tree[prefix]  # noqa: B018 - a group even without nodes of its own
            parent = prefix
    return dict(tree)


def assert_api(api: dict[str, Any], pipeline: Pipeline, catalog: DataCatalog) -> None:
    """Kedro-Viz's JSON of ``pipeline``: every node, its namespaces' tree, catalog layers."""
    by_id = {node["id"]: node for node in api["nodes"]}
    tasks = {node["full_name"]: node["name"] for node in api["nodes"] if node["type"] == "task"}
    assert set(tasks) == {node.name for node in pipeline.nodes}
    assert all(name == full.rpartition(".")[2] for full, name in tasks.items())  # the label

    expected = groups(pipeline)
    assert set(api["modular_pipelines"]) == set(expected)
    for group_id, group in expected.items():
        children = api["modular_pipelines"][group_id]["children"]
        drawn_tasks = {by_id[c["id"]]["full_name"] for c in children if c["type"] == "task"}
        assert drawn_tasks == group.nodes, group_id
        assert {c["id"] for c in children if c["type"] == "modularPipeline"} == group.children

    # A layer for every dataset of the catalog (entries and factory patterns); none for
    # the MemoryDatasets Kedro makes for the others.
    datasets = [node for node in api["nodes"] if node["type"] == "data"]
    layered = {node["name"] for node in datasets if node["layer"]}
    assert layered == {node["name"] for node in datasets if node["name"] in catalog}
    assert {node["layer"] for node in datasets} - {None} <= set(api["layers"]) <= set(LAYERS)


def test_every_node_is_in_its_stage_namespace(pipelines: dict[str, Pipeline]) -> None:
    """The registry's shape that the flowchart tests rely on: no node outside a stage."""
    assert groups(pipelines["__default__"])[ROOT] == Group(nodes=set(), children=STAGES)
    for stage in STAGES:
        assert {node.namespace_prefixes[0] for node in pipelines[stage].nodes} == {stage}


@dataclass
class Drawn:
    """What the flowchart shows: modular pipelines (by namespace) and task nodes (by name)."""

    groups: set[str]
    tasks: set[str]


def assert_drawn(page: Page, api: dict[str, Any], expected: Drawn) -> None:
    """The flowchart draws ``expected``, every node labelled, its data in layer bands.

    The bands: one per layer of a drawn dataset, labelled, top-down in ``api``'s order,
    each drawn dataset inside its own layer's band.
    """
    geometry = wait_drawn(page)
    by_id = {node["id"]: node for node in api["nodes"]}
    nodes = geometry["nodes"]
    drawn_groups = {node["id"] for node in nodes if node["type"] == "modularPipeline"}
    drawn_tasks = {by_id[node["id"]]["full_name"] for node in nodes if node["type"] == "task"}
    assert drawn_groups == expected.groups
    assert drawn_tasks == expected.tasks
    for node in nodes:  # labels: a group's namespace, a task's name in its namespace
        label = node["id"] if node["type"] == "modularPipeline" else by_id[node["id"]]["name"]
        assert node["text"] == label, node

    layer_of = {node["id"]: by_id[node["id"]].get("layer") for node in nodes}
    shown = {layer_of[node["id"]] for node in nodes} - {None}
    assert geometry["layerNames"] == [layer for layer in api["layers"] if layer in shown]
    bands = {band["name"]: band for band in geometry["layers"]}
    tops = [band["y"] for band in geometry["layers"]]
    assert tops == sorted(tops), geometry["layers"]  # top-down in the API's order
    for node in nodes:
        if layer := layer_of[node["id"]]:
            band = bands[layer]
            assert band["y"] <= node["y"] <= band["y"] + band["height"], (node, band)


def expand(page: Page, group: str) -> None:
    """Click the collapsed modular pipeline ``group``; it opens into its nodes."""
    node = page.locator(f'.pipeline-flowchart .pipeline-node--modularPipeline[data-id="{group}"]')
    node.click()
    node.wait_for(state="detached")
    page.mouse.move(1, 1)  # off the graph: no hover highlight


def test_viz_run_draws_stages_collapsed_in_layers_and_opens_each(
    viz_project: Path, pipelines: dict[str, Pipeline], catalog: DataCatalog
) -> None:
    """One node per stage at first; clicking opens each (and each ``budget_k`` in it)."""
    tree = groups(pipelines["__default__"])
    with viz_server(viz_project) as url, chromium() as browser:
        api = fetch_json(url + "api/main")
        assert api["selected_pipeline"] == "__default__"
        assert api["layers"] == LAYERS
        assert_api(api, pipelines["__default__"], catalog)

        page = open_viz(browser, url)  # Kedro-Viz's default: every modular pipeline collapsed
        drawn = Drawn(groups=set(tree[ROOT].children), tasks=set(tree[ROOT].nodes))
        assert drawn.groups == STAGES
        assert_drawn(page, api, drawn)
        closed = sorted(STAGES)
        while closed:  # each stage, then each namespace inside one, by a click
            group = closed.pop(0)
            expand(page, group)
            drawn.groups = (drawn.groups - {group}) | tree[group].children
            drawn.tasks |= tree[group].nodes
            closed += sorted(tree[group].children)
            assert_drawn(page, api, drawn)
        assert drawn == Drawn(groups=set(), tasks={n.name for n in pipelines["__default__"].nodes})
        assert page.locator(".pipeline-layer-name").all_text_contents() == LAYERS


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
    viz_project: Path, pipelines: dict[str, Pipeline], catalog: DataCatalog
) -> None:
    kedro(viz_project, "viz", "build")
    site = viz_project / "build"
    index = (site / "index.html").read_text()
    assert "<title>Kedro-Viz</title>" in index
    assert "./assets/index-" in index
    assert all((site / ref).is_file() for ref in ("favicon.ico", "api/main", "api/version"))
    for name, pipeline in pipelines.items():
        api = site / "api" / ("main" if name == "__default__" else f"pipelines/{name}")
        written = json.loads(api.read_text())
        assert written["selected_pipeline"] == name
        assert_api(written, pipeline, catalog)
    main = json.loads((site / "api" / "main").read_text())
    assert main["layers"] == LAYERS
    everything = Drawn(groups=set(), tasks={node.name for node in pipelines["__default__"].nodes})
    with static_server(site) as url, chromium() as browser:
        page = open_viz(browser, url, expand_all=True)
        assert_drawn(page, main, everything)
        assert page.locator(".pipeline-layer-name").all_text_contents() == LAYERS
