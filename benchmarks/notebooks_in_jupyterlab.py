"""Open every committed notebook in JupyterLab, in a headless browser, as a reader would.

    pip install -r benchmarks/requirements.txt              # selenium
    apt-get install chromium chromium-driver                # or point --chromium/--chromedriver elsewhere
    python benchmarks/notebooks_in_jupyterlab.py             # about 30 s a notebook

JupyterLab serves a copy of ``notebooks/`` (the committed files are never touched); each
notebook is opened alone, left to render, and scrolled through. Per notebook the table
says how many cells, figures and tables the browser shows against the outputs saved in the
file, how many error outputs it shows, whether a widget is shown as its text fallback (an
untrusted notebook), and whether JupyterLab marks the notebook modified on opening (it
does when the saved kernel metadata differs from what it would write: the reason the
runner keeps ``kernelspec`` and ``language_info`` as Jupyter writes them). Writes
benchmarks/results/notebooks_in_jupyterlab.json (``--out``); exits 1 naming the notebooks
that do not open clean: a figure or table missing, an error shown, or marked modified.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from uld.runner import WIDGET_FALLBACK_HINT

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
_SHOWN = {  # what the browser shows, by CSS selector inside the open notebook
    "cells": ".jp-Cell",
    "figures": ".jp-RenderedImage img",
    "tables": ".jp-RenderedHTMLCommon table",
    "errors": ".jp-RenderedText[data-mime-type='application/vnd.jupyter.stderr']",
    "widget_fallbacks": ".jp-RenderedText[data-mime-type='text/plain']",
}


def saved_outputs(path: Path) -> dict:
    """What the file holds: its cells, figures (PNG outputs), HTML tables in outputs and
    markdown tables, and widget outputs.

    >>> saved_outputs(ROOT / "notebooks" / "01_logit_distillation.ipynb")["figures"]
    1
    """
    notebook = json.loads(path.read_text(encoding="utf-8"))
    outputs = [output.get("data", {}) for cell in notebook["cells"] for output in cell.get("outputs", [])]
    markdown_tables = sum("\n|---" in "".join(cell["source"]) or "\n| ---" in "".join(cell["source"])
                          for cell in notebook["cells"] if cell["cell_type"] == "markdown")
    return {
        "cells": len(notebook["cells"]),
        "figures": sum("image/png" in data for data in outputs),
        "tables": sum("<table" in "".join(data.get("text/html", "")) for data in outputs) + markdown_tables,
        "widgets": sum("application/vnd.jupyter.widget-view+json" in data for data in outputs),
    }


def start_lab(folder: Path, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--allow-root",
               "--ServerApp.token=", "--ServerApp.password=", f"--ServerApp.root_dir={folder}",
               "--LabApp.news_url=None"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://localhost:{port}/api/status", timeout=1)
            return server
        except OSError:
            time.sleep(0.5)
    server.terminate()
    raise SystemExit(f"JupyterLab did not answer on port {port} within a minute")


def open_browser(chromium: str, chromedriver: str):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.binary_location = chromium
    return webdriver.Chrome(service=webdriver.ChromeService(chromedriver), options=options)


def shown(driver, url: str, settle: float) -> dict:
    """Open ``url`` alone (``?reset``: no other document), let it render, scroll through it,
    and count what the open notebook shows; ``modified``: JupyterLab's dirty mark on its tab."""
    from selenium.webdriver.common.by import By

    driver.get(url + "?reset")
    deadline = time.time() + 120
    while time.time() < deadline and not driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Cell"):
        time.sleep(0.5)
    time.sleep(settle)
    panel = driver.find_element(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden)")
    scroller = panel.find_element(By.CSS_SELECTOR, ".jp-NotebookPanel-notebook")
    for _ in range(80):  # cells far down render once reached
        driver.execute_script("arguments[0].scrollTop += 1500", scroller)
        time.sleep(0.2)
    time.sleep(2)
    counts = {name: len(panel.find_elements(By.CSS_SELECTOR, css)) for name, css in _SHOWN.items()}
    counts["widget_fallbacks"] = sum(WIDGET_FALLBACK_HINT in element.text
                                     for element in panel.find_elements(By.CSS_SELECTOR, _SHOWN["widget_fallbacks"]))
    tab = driver.find_element(By.CSS_SELECTOR, ".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current")
    counts["modified"] = "jp-mod-dirty" in tab.get_attribute("class")
    return counts


def problems(saved: dict, seen: dict) -> list[str]:
    """What keeps a notebook from opening clean.

    >>> problems({"cells": 3, "figures": 2, "tables": 1}, {"cells": 3, "figures": 1, "tables": 1,
    ...          "errors": 0, "modified": True})
    ['1 of 2 figures shown', 'marked modified on opening']
    """
    found = [f"{seen[kind]} of {saved[kind]} {kind} shown" for kind in ("cells", "figures", "tables")
             if seen[kind] < saved[kind]]
    if seen["errors"]:
        found.append(f"{seen['errors']} error outputs")
    if seen["modified"]:
        found.append("marked modified on opening")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebooks-dir", type=Path, default=ROOT / "notebooks")
    parser.add_argument("--only", default="", help="notebooks whose name starts with this")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    parser.add_argument("--port", type=int, default=8890)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds to let a notebook render")
    parser.add_argument("--out", type=Path, default=RESULTS / "notebooks_in_jupyterlab.json")
    args = parser.parse_args(argv)
    for program in (args.chromium, args.chromedriver):
        if not Path(program).exists():
            print(f"{program} not found: apt-get install chromium chromium-driver, or pass --chromium "
                  f"and --chromedriver", file=sys.stderr)
            return 2
    if importlib.util.find_spec("selenium") is None:
        print("selenium is not installed: pip install -r benchmarks/requirements.txt", file=sys.stderr)
        return 2
    notebooks = sorted(p for p in args.notebooks_dir.glob("*.ipynb") if p.name.startswith(args.only))
    if not notebooks:
        print(f"no notebook in {args.notebooks_dir} starts with {args.only!r}", file=sys.stderr)
        return 2

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        copies = [Path(shutil.copy(path, folder)) for path in notebooks]
        before = [copy.read_bytes() for copy in copies]
        server = start_lab(Path(folder), args.port)
        driver = open_browser(args.chromium, args.chromedriver)
        try:
            print("| notebook | cells | figures | tables | errors | widget fallbacks | modified | clean |")
            print("|---|---|---|---|---|---|---|---|")
            for copy in copies:
                saved = saved_outputs(copy)
                seen = shown(driver, f"http://localhost:{args.port}/lab/tree/{copy.name}", args.settle)
                row = {"notebook": copy.stem, "saved": saved, "shown": seen, "problems": problems(saved, seen)}
                rows.append(row)
                print(f"| {copy.stem} | {seen['cells']}/{saved['cells']} | {seen['figures']}/{saved['figures']} | "
                      f"{seen['tables']}/{saved['tables']} | {seen['errors']} | "
                      f"{seen['widget_fallbacks']}/{saved['widgets']} | {'yes' if seen['modified'] else 'no'} | "
                      f"{'; '.join(row['problems']) or 'yes'} |", flush=True)
        finally:
            driver.quit()
            server.terminate()
            server.wait()
        untouched = all(copy.read_bytes() == data for copy, data in zip(copies, before))
    print(f"files unchanged by opening them: {'yes' if untouched else 'no'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"notebooks": rows, "files_unchanged": untouched}, indent=2) + "\n")
    failed = [row["notebook"] for row in rows if row["problems"]]
    if failed:
        print(f"not clean: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed or not untouched else 0


if __name__ == "__main__":
    sys.exit(main())
