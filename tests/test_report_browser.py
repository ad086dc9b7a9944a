"""The HTML report rendered by headless Chromium: tables and images in the DOM, header click sorts, hostile
names stay text, the screenshot is not blank. Skips when `chromium` is absent (`.ci/run` installs it)."""

import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from test_report import rec  # noqa: E402 - tests/ is on sys.path under pytest's rootdir import mode
from vitbench.report import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium; .ci/run does it)")
HOSTILE = "<img src=x onerror=alert(1)>"


def _chromium(*args, timeout=120):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


class Dom(HTMLParser):
    """Tables (id -> rows of cell texts) and <img> elements of a dumped DOM."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self._table, self._cell = {}, [], None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = ""
        elif tag == "img":
            self.images.append(attrs)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append(self._cell.strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser")
    recs = []
    for task, group, vals in (("caltech101", "natural", (.82, .86)), ("dtd", "natural", (.70, .72)),
                              ("eurosat", "specialized", (.95, .91)), ("dmlab", "structured", (.40, .46))):
        recs += [rec(task, group, v, seed=s) for s, v in enumerate(vals)]
    recs += [rec(HOSTILE, "natural", v, seed=s, model=HOSTILE, method="fewshot",
                 params={"shots": k, "l2": 1024.0, "l2_select": "fixed"}) for k, v in ((1, .3), (5, .6)) for s in (0, 1)]
    return build_report(recs, out / "r", title="browser check")["html"]


def _dump(url):
    res = _chromium("--virtual-time-budget=5000", "--dump-dom", url)
    assert res.returncode == 0, res.stderr[-2000:]
    dom = Dom()
    dom.feed(res.stdout)
    return dom, res.stdout


def test_tables_images_and_hostile_names_in_the_rendered_dom(report):
    dom, text = _dump(report.as_uri())
    assert {"vtab", "table2", "summary", "fewshot", "records"} <= set(dom.tables)
    assert len(dom.tables["vtab"]) >= 2 and dom.tables["vtab"][0][5] == "caltech101"
    pngs = [i for i in dom.images if i.get("src", "").startswith("data:image/png;base64,")]
    assert len(pngs) >= 2 and all(i.get("src") != "x" for i in dom.images)  # the hostile <img> never became an element
    assert any(HOSTILE in cell for row in dom.tables["summary"] for cell in row)  # shown as text


def test_clicking_a_header_sorts_its_rows(report):
    plain, _ = _dump(report.as_uri())
    header = plain.tables["records"][0]
    col = header.index("value (%)")
    before = [float(r[col]) for r in plain.tables["records"][1:]]
    asc, _ = _dump(report.as_uri() + f"#sort=records:{col}")
    desc, _ = _dump(report.as_uri() + f"#sort=records:{col}:desc")
    got_asc = [float(r[col]) for r in asc.tables["records"][1:]]
    got_desc = [float(r[col]) for r in desc.tables["records"][1:]]
    assert before != sorted(before)  # the page's own order is not already sorted by value
    assert got_asc == sorted(before) and got_desc == sorted(before, reverse=True)


def test_screenshot_is_not_blank(report, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    res = _chromium(f"--screenshot={shot}", "--window-size=1280,1600", "--virtual-time-budget=5000", report.as_uri())
    assert shot.exists(), res.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (1600, 1280) and pixels.std() > 10  # text, tables and plots, not a blank page
