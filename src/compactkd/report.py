"""The figures and the self-contained HTML report of a finished run, from its tables only.

Nothing here recomputes a figure: every number comes from a table a node wrote. Matplotlib
runs headless (Agg), and the HTML embeds its images, so the report opens without a network.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display is ever needed

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

MODEL_STYLES = {
    "student": {"color": "tab:red", "marker": "o"},
    "scratch": {"color": "tab:gray", "marker": "s"},
    "uniform": {"color": "tab:blue", "marker": "^"},
    "pruned": {"color": "tab:green", "marker": "D"},
    "torch_pruning": {"color": "tab:purple", "marker": "v"},
}


def _line_chart(figure: Figure, xlabel: str, ylabel: str, title: str) -> Figure:
    """Labels, grid and legend of a one-axes line chart."""
    axes = figure.axes[0]
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return figure


def pareto_figure(sweep: pd.DataFrame) -> Figure:
    """Test top-1 against FLOPs per image for every model at every budget, teacher starred."""
    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    for model, style in MODEL_STYLES.items():
        rows = sweep[sweep["model"] == model].sort_values("flops")
        if len(rows):
            # Error bars: the first seed's 95% interval (test sampling), about the mean.
            below, above = rows["top1"] - rows["top1_low"], rows["top1_high"] - rows["top1"]
            axes.errorbar(rows["flops"] / 1e6, rows["top1_mean"], yerr=[below, above],
                          capsize=3, label=model, **style)  # fmt: skip
    teacher = sweep[sweep["model"] == "teacher"].iloc[0]
    axes.scatter(teacher["flops"] / 1e6, teacher["top1"], marker="*", s=220, c="black",
                 label="teacher", zorder=3)  # fmt: skip
    return _line_chart(figure, "FLOPs per image (millions)", "test top-1 accuracy (%)",
                       "Accuracy against cost, one point per budget")  # fmt: skip


def blocks_figure(spec: Mapping[str, Any], candidates: pd.DataFrame) -> Figure:
    """Per block: the teacher's own FLOPs against the chosen candidate's, family named."""
    blocks = [name for name in spec["blocks"] if name not in ("stem", "head")]
    chosen = [spec["blocks"][name]["flops"] / 1e6 for name in blocks]
    own = candidates[candidates["family"] == "teacher"].set_index("block")["flops"]
    teacher = [own[name] / 1e6 for name in blocks]
    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    positions = range(len(blocks))
    axes.bar([p - 0.2 for p in positions], teacher, width=0.4, label="teacher", color="black")
    axes.bar([p + 0.2 for p in positions], chosen, width=0.4, label="student", color="tab:red")
    # Each block's label names the chosen candidate, e.g. "pruned_r0.5@1-0.5".
    labels = [f"{name}\n{spec['blocks'][name]['candidate'].split(':', 1)[1]}" for name in blocks]
    axes.set_xticks(list(positions), labels, fontsize=8)
    axes.set_ylabel("FLOPs per image (millions)")
    axes.set_title("Cost of each block: teacher and chosen candidate")
    axes.legend()
    figure.tight_layout()
    return figure


def curves_figure(teacher: pd.DataFrame, finetunes: pd.DataFrame) -> Figure:
    """Validation accuracy per epoch: the teacher's training and each fine-tune (first seed)."""
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    if len(teacher):
        axes.plot(teacher["epoch"], teacher["val_accuracy"], color="black", label="teacher")
    first = finetunes[finetunes["seed"] == finetunes["seed"].min()]
    for model, style in MODEL_STYLES.items():
        rows = first[first["model"] == model]
        if len(rows):
            axes.plot(rows["epoch"], rows["val_accuracy"], label=model, color=style["color"])
    return _line_chart(figure, "epoch", "validation top-1 accuracy (%)", "Training curves")


def confusion_figure(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> Figure:
    """The student's confusion matrix on the test split (rows: true class)."""
    figure, axes = plt.subplots(figsize=(5.6, 5.0))
    image = axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title("Student: confusion matrix (test images)")
    figure.colorbar(image, ax=axes, label="images")
    figure.tight_layout()
    return figure


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


COLUMNS = {
    "top1": ("top-1 %", "{:.2f}"), "top1_ci95": ("95% interval", "[{:.2f}, {:.2f}]"),
    "top1_std": ("std over seeds", "{:.2f}"),
    "top5": ("top-5 %", "{:.2f}"), "flops": ("MFLOPs", "{:.2f}"), "params": ("params", "{:,.0f}"),
    "size_bytes": ("size kB", "{:.0f}"), "latency_ms_b1": ("latency b1 ms", "{:.2f}"),
    "latency_ms_b32": ("latency b32 ms", "{:.1f}"), "flops_reduction": ("FLOPs red.", "{:.2f}x"),
    "params_reduction": ("params red.", "{:.2f}x"), "speedup": ("speedup b1", "{:.2f}x"),
    "speedup_iqr": ("speedup IQR", "{:.2f}"),
}  # fmt: skip


def comparison_rows(comparison: pd.DataFrame) -> list[dict[str, str]]:
    """The comparison table as display strings (units applied, reductions as factors)."""
    rows = []
    for record in comparison.to_dict("records"):
        row = {"model": record["model"]}
        for key, (label, form) in COLUMNS.items():
            value = record.get(key)
            if key == "flops" and value == value:
                value = value / 1e6
            if key == "size_bytes":
                value = value / 1e3
            if key == "top1_ci95":  # a list, or its text once read back from the CSV
                value = json.loads(value) if isinstance(value, str) else value
                row[label] = "" if not isinstance(value, list) else form.format(*value)
                continue
            row[label] = "" if value is None or value != value else form.format(value)
        rows.append(row)
    return rows


def _table(rows: list[dict[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values()) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def html_report(
    title: str,
    facts: Mapping[str, str],
    comparison: pd.DataFrame,
    figures: Mapping[str, Figure],
) -> str:
    """One HTML file: the run's key facts, the comparison table, every figure embedded."""
    fact_rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts.items()
    )
    images = "".join(
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{_png(figure)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for caption, figure in figures.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }}
th {{ background: #f4f4f4; }} .facts td {{ text-align: left; }}
figure {{ margin: 1.5rem 0; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<h2>The run</h2><table class="facts">{fact_rows}</table>
<h2>Teacher, student and baselines</h2>{_table(comparison_rows(comparison))}
<h2>Figures</h2>{images}
</body></html>
"""


def markdown_summary(title: str, facts: Mapping[str, str], comparison: pd.DataFrame) -> str:
    """A short Markdown twin of the report's first screen."""
    rows = comparison_rows(comparison)
    lines = [f"# {title}", ""] + [f"- **{k}**: {v}" for k, v in facts.items()] + [""]
    lines.append("| " + " | ".join(rows[0]) + " |")
    lines.append("|" + "---|" * len(rows[0]))
    lines += ["| " + " | ".join(row.values()) + " |" for row in rows]
    return "\n".join(lines) + "\n\nFigures: see report.html and the PNG files beside it.\n"
