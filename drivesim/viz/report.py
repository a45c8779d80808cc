"""The static HTML report of `drivesim demo`, and a headless-Chromium check that its images load.

`write_report` makes one self-contained page (inline CSS, no external resources) from a list of
sections; figures are PNG / GIF files beside it, referenced by relative path, so the folder can be
zipped or served as is. The page carries a few lines of inline script that, once the window has
loaded, write what each <img> decoded to into a hidden `<pre id="render-check">`. `render_check`
opens the page in headless Chromium, dumps the DOM and reads that element back: a figure that was
written but cannot be decoded (truncated, wrong format) shows up as not loaded.
"""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from drivesim.atomic import write_text

IMAGE_SUFFIXES = (".png", ".gif")
CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@dataclass(frozen=True)
class Table:
    """One table of a section.

    Attributes:
      caption: shown above the table.
      header: column names.
      rows: one tuple per row, as long as `header`; floats are shown to 3 decimals, everything else with str().
    """

    caption: str
    header: tuple[str, ...]
    rows: tuple[tuple, ...] = ()


@dataclass(frozen=True)
class Section:
    """One section of the report, in this order: heading, text, images, tables.

    Attributes:
      heading: the section title.
      text: plain text; blank lines separate paragraphs. Escaped, so it may contain <, > and &.
      images: PNG or GIF paths relative to the report folder; each must exist when the report is written.
      tables: tables shown after the images.
    """

    heading: str
    text: str = ""
    images: tuple[str, ...] = ()
    tables: tuple[Table, ...] = ()


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 72rem; margin: 2rem auto;
       padding: 0 1rem; color: #1d232a; line-height: 1.45; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
figcaption { font-size: .85rem; color: #57606a; }
table { border-collapse: collapse; margin: 1rem 0; font-variant-numeric: tabular-nums; }
caption { text-align: left; font-weight: 600; padding-bottom: .3rem; }
th, td { border: 1px solid #d0d7de; padding: .25rem .6rem; }
th { background: #f6f8fa; }
td.num { text-align: right; }
"""

# Runs on window load, i.e. after every <img> has either decoded or failed.
_CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var out = Array.prototype.map.call(document.images, function (im) {
    return {src: im.getAttribute("src"), width: im.naturalWidth, height: im.naturalHeight, complete: im.complete};
  });
  var pre = document.createElement("pre");
  pre.id = "render-check";
  pre.hidden = true;
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
"""


def _cell(value) -> tuple[str, bool]:
    """(escaped text, is numeric) of one table cell."""
    if isinstance(value, bool) or value is None:
        return html.escape("" if value is None else str(value)), False
    if isinstance(value, Integral):
        return str(int(value)), True
    if isinstance(value, Real):
        v = float(value)
        return ("nan" if math.isnan(v) else f"{v:.3f}"), True
    return html.escape(str(value)), False


def _paragraphs(text: str) -> list[str]:
    return [f"<p>{html.escape(p.strip())}</p>" for p in re.split(r"\n\s*\n", text) if p.strip()]


def _image(out_dir: Path, src: str, heading: str) -> str:
    rel = PurePosixPath(Path(src).as_posix())
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"report image {src!r} must be a path inside the report folder {out_dir}, relative to it")
    if rel.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"report image {src!r} must be a PNG or GIF file")
    if not (out_dir / rel).is_file():
        raise FileNotFoundError(f"report image {src!r} not found in {out_dir}; write the figure before the report")
    alt = html.escape(f"{heading}: {rel.name}", quote=True)
    return (
        f'<figure><img src="{html.escape(quote(str(rel)), quote=True)}" alt="{alt}">'
        f"<figcaption>{html.escape(rel.name)}</figcaption></figure>"
    )


def _table(t: Table) -> str:
    header = tuple(t.header)
    parts = ["<table>", f"<caption>{html.escape(t.caption)}</caption>", "<thead><tr>"]
    parts += [f"<th>{html.escape(str(h))}</th>" for h in header]
    parts.append("</tr></thead><tbody>")
    for i, row in enumerate(t.rows):
        if len(row) != len(header):
            raise ValueError(
                f"table {t.caption!r}: row {i} has {len(row)} cells but the header has {len(header)} ({header})"
            )
        cells = (_cell(v) for v in row)
        parts.append("<tr>" + "".join(f'<td class="num">{s}</td>' if num else f"<td>{s}</td>" for s, num in cells))
        parts.append("</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def render_html(out_dir: Path, title: str, sections: list[Section]) -> str:
    """The report page as a string; checks that every image exists under `out_dir`."""
    out_dir = Path(out_dir)
    body = [f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        body.append(f"<section>\n<h2>{html.escape(s.heading)}</h2>")
        body += _paragraphs(s.text)
        body += [_image(out_dir, src, s.heading) for src in s.images]
        body += [_table(t) for t in s.tables]
        body.append("</section>")
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{_CSS}</style>",
            f"<script>{_CHECK_SCRIPT}</script>",
            "</head>",
            "<body>",
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )
    # Character references for anything outside ASCII: the file reads the same whatever encoding opens it.
    return page.encode("ascii", "xmlcharrefreplace").decode("ascii")


def write_report(out_dir: Path, title: str, sections: list[Section]) -> Path:
    """Write `out_dir/index.html` atomically (temporary name, then rename) and return its path.

    Raises FileNotFoundError naming any image that is not in `out_dir`, ValueError for an image that
    is not a relative PNG / GIF path or a table row whose length differs from its header.
    """
    out_dir = Path(out_dir)
    page = render_html(out_dir, title, sections)  # validate everything before touching the folder
    return write_text(out_dir / "index.html", page)


def find_chromium() -> str | None:
    """Path of a Chromium binary on PATH (or /usr/bin/chromium), or None."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


_CHECK_RE = re.compile(r'<pre id="render-check"[^>]*>(.*?)</pre>', re.S)


def render_check(index_html: Path, timeout: float = 60) -> dict:
    """Open a report in headless Chromium and say whether each of its images decoded.

    Args:
      index_html: a page written by `write_report`.
      timeout: seconds to wait for Chromium.

    Returns:
      {"images": [{"src", "width", "height", "loaded"}], "all_loaded": bool}; `width` / `height` are
      the decoded (natural) size, 0 for an image the browser could not decode. A page without images
      has all_loaded True.
    """
    index_html = Path(index_html).resolve()
    if not index_html.is_file():
        raise FileNotFoundError(f"no report at {index_html}")
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("headless Chromium not found; install Debian's chromium: apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="drivesim-chromium-") as profile:
        cmd = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--dump-dom",
            "--virtual-time-budget=5000",
            index_html.as_uri(),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"headless Chromium did not finish rendering {index_html} within {timeout} s") from e
    m = _CHECK_RE.search(proc.stdout)
    if m is None:
        tail = "\n".join(proc.stderr.strip().splitlines()[-10:])
        raise RuntimeError(
            f"headless Chromium (exit {proc.returncode}) returned no render-check result for {index_html}; "
            f"is it a page written by drivesim.viz.report.write_report?\n{tail}"
        )
    images = [
        {
            "src": im["src"],
            "width": int(im["width"]),
            "height": int(im["height"]),
            "loaded": bool(im["complete"]) and im["width"] > 0 and im["height"] > 0,
        }
        for im in json.loads(html.unescape(m.group(1)))
    ]
    return {"images": images, "all_loaded": all(im["loaded"] for im in images)}
