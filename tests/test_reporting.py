"""The report of a finished run: figures, a self-contained HTML page, a Markdown summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from helpers import TINY_RUN, run_session
from matplotlib.container import ErrorbarContainer

from compactkd.report import comparison_rows, pareto_figure

pytestmark = pytest.mark.slow


def test_report_is_one_self_contained_page_with_every_model_and_figure(finished_run: Path) -> None:
    reporting = finished_run / "data" / "08_reporting"
    page = (reporting / "report.html").read_text()
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) == 4 and all(src.startswith("data:image/png;base64,") for src in images)
    assert "http://" not in page and "https://" not in page  # opens without a network
    for model in ("teacher", "student", "scratch", "uniform", "pruned", "torch_pruning"):
        assert f"<td>{model}</td>" in page
    for name in ("pareto", "blocks", "curves", "confusion"):
        assert (reporting / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    summary = (reporting / "report.md").read_text()
    assert "| student |" in summary and "fewer FLOPs" in summary


def test_comparison_rows_show_units_and_factors(finished_run: Path) -> None:
    comparison = pd.read_csv(finished_run / "data/08_reporting/comparison.csv")
    rows = {row["model"]: row for row in comparison_rows(comparison)}
    student = comparison[comparison["model"] == "student"].iloc[0]
    assert rows["student"]["MFLOPs"] == f"{student['flops'] / 1e6:.2f}"
    assert rows["student"]["FLOPs red."].endswith("x") and rows["teacher"]["FLOPs red."] == ""
    low, high = json.loads(student["top1_ci95"])
    assert rows["student"]["95% interval"] == f"[{low:.2f}, {high:.2f}]"
    assert low <= student["top1"] <= high
    assert float(rows["student"]["speedup IQR"]) >= 0 and rows["teacher"]["speedup IQR"] == ""


def test_pareto_figure_labels_its_axes_with_units(finished_run: Path) -> None:
    sweep = pd.read_csv(finished_run / "data/08_reporting/sweep.csv")
    axes = pareto_figure(sweep).axes[0]
    assert "FLOPs" in axes.get_xlabel() and "millions" in axes.get_xlabel()
    assert "%" in axes.get_ylabel()
    assert {text.get_text() for text in axes.get_legend().get_texts()} >= {"student", "teacher"}
    # Every model's points carry error bars: the 95% interval's extent about the mean.
    bars = {c.get_label(): c for c in axes.containers if isinstance(c, ErrorbarContainer)}
    assert "student" in bars
    student = sweep[sweep["model"] == "student"].sort_values("flops").iloc[0]
    segments = bars["student"].lines[2][0].get_segments()
    (_, bottom), (_, top) = segments[0]
    width = student["top1_high"] - student["top1_low"]
    assert top - bottom == pytest.approx(width) and student["top1_low"] < student["top1_high"]


def test_reporting_before_evaluation_says_which_pipeline_to_run(
    project_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project_copy)
    with pytest.raises(FileNotFoundError, match=r"kedro run --pipelines .*evaluation"):
        run_session(project_copy, ["reporting"], TINY_RUN)
    assert not (project_copy / "data/08_reporting/report.html").exists()


def test_notebook_runs_against_a_finished_run(finished_run: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(finished_run / "notebooks" / "explore_results.ipynb", as_version=4)
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", allow_errors=True,
        resources={"metadata": {"path": str(finished_run / "notebooks")}},
    )  # fmt: skip
    client.execute()
    errors = [
        f"{o['ename']}: {o['evalue']}"
        for cell in notebook.cells
        for o in cell.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, errors
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "student" in text and "pruned" in text  # the comparison table
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the Pareto plot
    assert re.search(r"\d of 8 right", text)  # the student classified test images
