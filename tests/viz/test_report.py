"""The demo's HTML report: escaped text, tables, images that exist, and (in headless Chromium) images that decode."""

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from drivesim.viz.report import Section, Table, find_chromium, render_check, write_report  # noqa: E402


@pytest.fixture
def figures(tmp_path):
    """A matplotlib PNG and a two-frame PIL GIF in tmp_path/figs; returns their (width, height) by relative path."""
    (tmp_path / "figs").mkdir()
    fig, ax = plt.subplots(figsize=(2, 1.5), dpi=50)
    ax.plot([0, 1, 2], [0, 1, 0])
    fig.savefig(tmp_path / "figs" / "curve.png")
    plt.close(fig)
    frames = [Image.fromarray(np.full((12, 20, 3), c, np.uint8)) for c in (40, 200)]
    frames[0].save(tmp_path / "figs" / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return {
        "figs/curve.png": Image.open(tmp_path / "figs" / "curve.png").size,
        "figs/anim.gif": (20, 12),
    }


def _sections(images):
    return [
        Section(
            heading="Planners <ranked> & scored",
            text="First paragraph with <b>not bold</b>.\n\n  Second & last.\n",
            images=tuple(images),
            tables=(
                Table(
                    caption="PDMS <all>",
                    header=("planner", "pdms", "n"),
                    rows=(("idm<v2>", 0.87654, 12), ("constant", np.float32(0.5), np.int64(3))),
                ),
            ),
        ),
        Section(heading="Empty"),
    ]


def test_html_escaped_tables_and_images(tmp_path, figures):
    path = write_report(tmp_path, "drivesim demo <&> \u00e9", _sections(figures))
    assert path == tmp_path / "index.html"
    page = path.read_text(encoding="ascii")  # non-ASCII goes out as character references
    assert "<title>drivesim demo &lt;&amp;&gt; &#233;</title>" in page
    assert "<h2>Planners &lt;ranked&gt; &amp; scored</h2>" in page
    assert "<p>First paragraph with &lt;b&gt;not bold&lt;/b&gt;.</p>" in page
    assert "<p>Second &amp; last.</p>" in page
    assert "<b>" not in page and "<ranked>" not in page
    assert "<caption>PDMS &lt;all&gt;</caption>" in page
    assert "<th>planner</th><th>pdms</th><th>n</th>" in page
    assert re.search(r"<td>idm&lt;v2&gt;</td><td[^>]*>0\.877</td><td[^>]*>12</td>", page)
    assert re.search(r"<td>constant</td><td[^>]*>0\.500</td><td[^>]*>3</td>", page)
    for src in figures:
        assert re.search(rf'<img src="{re.escape(src)}" alt="Planners &lt;ranked&gt; &amp; scored: [^"]+">', page)
    # self-contained: nothing fetched from elsewhere
    assert "http" not in page and "<link" not in page and "@import" not in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figs", "index.html"]  # no temporary file left


def test_rewrite_and_bad_inputs(tmp_path, figures):
    write_report(tmp_path, "first", _sections(figures))
    write_report(tmp_path, "second", [Section("only text", "hello")])
    assert "<title>second</title>" in (tmp_path / "index.html").read_text()
    before = (tmp_path / "index.html").read_text()
    with pytest.raises(FileNotFoundError, match="figs/missing.png"):
        write_report(tmp_path, "third", [Section("h", images=("figs/curve.png", "figs/missing.png"))])
    with pytest.raises(ValueError, match="PNG or GIF"):
        write_report(tmp_path, "third", [Section("h", images=("figs/curve.svg",))])
    with pytest.raises(ValueError, match="inside the report folder"):
        write_report(tmp_path, "third", [Section("h", images=("../elsewhere.png",))])
    with pytest.raises(ValueError, match="row 0 has 1 cells but the header has 2"):
        write_report(tmp_path, "third", [Section("h", tables=(Table("t", ("a", "b"), ((1,),)),))])
    assert (tmp_path / "index.html").read_text() == before  # a failed write leaves the previous report


def test_images_load_in_headless_chromium(tmp_path, figures):
    if find_chromium() is None:
        pytest.skip("headless Chromium not installed (apt-get install -y chromium)")
    (tmp_path / "figs" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)

    (tmp_path / "good" / "figs").mkdir(parents=True)  # a report folder of its own, with copies of the figures
    for src in figures:
        (tmp_path / "good" / src).write_bytes((tmp_path / src).read_bytes())
    good = write_report(tmp_path / "good", "good", _sections(figures))
    res = render_check(good)
    assert res["all_loaded"] is True
    assert {im["src"]: (im["width"], im["height"]) for im in res["images"]} == figures
    assert all(im["loaded"] for im in res["images"])

    bad = write_report(tmp_path, "bad", _sections([*figures, "figs/corrupt.png"]))
    res = render_check(bad)
    assert res["all_loaded"] is False
    loaded = {im["src"]: im["loaded"] for im in res["images"]}
    assert loaded == {"figs/curve.png": True, "figs/anim.gif": True, "figs/corrupt.png": False}


def test_no_chromium_is_a_clear_error(tmp_path, monkeypatch):
    import drivesim.viz.report as report

    monkeypatch.setattr(report, "find_chromium", lambda: None)
    page = write_report(tmp_path, "t", [])
    with pytest.raises(RuntimeError, match="apt-get install -y chromium"):
        render_check(page)
