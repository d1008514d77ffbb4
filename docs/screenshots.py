"""Screenshots for the docs: the Kedro-Viz flowchart and the first screen of the report.

    .venv/bin/python docs/screenshots.py [PROJECT] [--report REPORT_HTML]

starts ``kedro viz run`` in PROJECT (default: this repository; Kedro-Viz needs only the code
and ``conf/``), photographs the whole flowchart to ``docs/kedro-viz.png``, then opens the
report of a finished run (default: PROJECT/data/08_reporting/report.html) and photographs
its first screen to ``docs/report.png``. Uses Debian's ``chromium`` headless, offline.
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


def screenshot_viz(project: Path, out: Path, width: int = 1600, height: int = 1000) -> None:
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
    args = parser.parse_args()
    report = args.report or args.project / "data" / "08_reporting" / "report.html"
    if not report.is_file():
        parser.error(f"no report at {report}: run the pipeline (`kedro run`) first")
    screenshot_viz(args.project.resolve(), args.out / "kedro-viz.png")
    screenshot_report(report, args.out / "report.png")
    print(f"wrote {args.out / 'kedro-viz.png'} and {args.out / 'report.png'}")


if __name__ == "__main__":
    main()
