"""Screenshots for the docs: the Kedro-Viz flowchart and the first screen of the report.

    .venv/bin/python docs/screenshots.py [PROJECT] [--report REPORT_HTML] [--only viz|report]

starts ``kedro viz run`` in PROJECT (default: this repository; Kedro-Viz needs only the code
and ``conf/``), photographs the whole flowchart to ``docs/kedro-viz.png`` as Kedro-Viz first
draws it (each stage one collapsed group, datasets in their catalog layers' bands, fitted),
then opens the report of a finished run (default: PROJECT/data/08_reporting/report.html) and
photographs its first screen to ``docs/report.png``. ``--only`` takes one of the two.
Uses Debian's ``chromium`` headless, offline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT / "tests"))  # the browser helpers shared with tests/test_viz.py

from browser import chromium, new_page, open_viz, viz_server  # noqa: E402

SCALE = 2  # device pixels per CSS pixel: the flowchart's small labels stay legible


def screenshot_viz(project: Path, out: Path, width: int = 1600, height: int = 1260) -> None:
    """The flowchart, fitted: a viewport about as tall as the graph's fit leaves it readable."""
    with viz_server(project) as url, chromium() as browser:
        open_viz(browser, url, width, height, SCALE).screenshot(path=out)


def screenshot_report(report: Path, out: Path, width: int = 1280, height: int = 900) -> None:
    with chromium() as browser:
        page = new_page(browser, width, height, SCALE)
        page.goto(report.resolve().as_uri(), wait_until="load")  # figures are inlined
        page.screenshot(path=out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path, nargs="?", default=ROOT)
    parser.add_argument("--report", type=Path, help="default: PROJECT/data/08_reporting/")
    parser.add_argument("--out", type=Path, default=DOCS, help="folder of the PNGs")
    parser.add_argument("--only", choices=["viz", "report"], help="default: both")
    args = parser.parse_args()
    report = args.report or args.project / "data" / "08_reporting" / "report.html"
    if args.only != "viz" and not report.is_file():
        parser.error(f"no report at {report}: run the pipeline (`kedro run`) first")
    written = []
    if args.only != "report":
        screenshot_viz(args.project.resolve(), args.out / "kedro-viz.png")
        written.append(args.out / "kedro-viz.png")
    if args.only != "viz":
        screenshot_report(report, args.out / "report.png")
        written.append(args.out / "report.png")
    print("wrote", " and ".join(map(str, written)))


if __name__ == "__main__":
    main()
