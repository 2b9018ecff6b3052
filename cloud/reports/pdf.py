"""The shift report as an A4 PDF (fpdf2), with an embedded CJK font so Chinese names and comments render.

The font is the first of `FONT_CANDIDATES` that exists (Debian's fonts-wqy-microhei first), or the file in
`ZHIZAO_REPORT_FONT`; only the glyphs used are embedded (fpdf2 subsets the font). Without such a font an English
report falls back to the PDF core font Helvetica (characters outside Latin-1 print as `?`), and a Chinese report
is refused with `FontMissing`, which names the package to install and the setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fpdf import FPDF
from fpdf.enums import TableBordersLayout
from fpdf.fonts import FontFace

from zhizao.cloud.reports.shift import LOSSES, Lang
from zhizao.cloud.reports.text import hours, pct, word

__all__ = ["FONT_CANDIDATES", "FontMissing", "find_font", "report_pdf"]

FONT_CANDIDATES = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),  # Debian/Ubuntu: fonts-wqy-microhei
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),  # fonts-wqy-zenhei
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),  # fonts-noto-cjk
    Path("/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc"),  # Fedora: google-noto-sans-cjk-fonts
    Path("/usr/share/fonts/wenquanyi/wqy-microhei/wqy-microhei.ttc"),  # Fedora: wqy-microhei-fonts
)
_FAMILY = "cjk"
# Headings shaded, not bold: the CJK font has one style only.
_HEAD = FontFace(fill_color=(232, 236, 240))


class FontMissing(RuntimeError):
    """No font with Chinese glyphs is installed where the report looks; the message says what to install."""


def find_font(configured: Path | None) -> Path | None:
    """The configured font when given (FontMissing when that file is not there), else the first candidate found."""
    if configured is not None:
        if not configured.is_file():
            raise FontMissing(f"ZHIZAO_REPORT_FONT={str(configured)!r}: no such font file")
        return configured
    return next((p for p in FONT_CANDIDATES if p.is_file()), None)


class _Doc(FPDF):
    def __init__(self, footer_text: str, cjk: bool) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.footer_text = footer_text
        self.cjk = cjk

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(size=7)
        self.set_text_color(110)
        self.cell(0, 5, f"{self.footer_text}   {self.page_no()}/{{nb}}", align="R")
        self.set_text_color(0)


def report_pdf(report: dict[str, Any], font: Path | None) -> bytes:
    """The report as PDF bytes; `font` is a file with CJK glyphs (None: Helvetica, English only)."""
    lang: Lang = report["lang"]
    if font is None and lang == "zh":
        raise FontMissing(
            "a Chinese PDF needs a font with Chinese glyphs: install Debian's fonts-wqy-microhei"
            f" ({FONT_CANDIDATES[0]}) or set ZHIZAO_REPORT_FONT to a .ttf/.otf/.ttc file"
        )
    site, shift = report["site"], report["shift"]
    doc = _Doc(f"zhizao · {site['id']} · {shift['name']} {shift['local_start']}", font is not None)
    doc.set_title(f"{word('title', lang)} {site['id']} {shift['name']} {shift['local_start']}")
    doc.set_creator("zhizao")
    doc.set_margins(14, 14, 14)
    doc.set_auto_page_break(True, margin=16)
    if font is not None:
        doc.add_font(_FAMILY, "", str(font))
        doc.set_font(_FAMILY, size=9)
    else:
        doc.set_font("helvetica", size=9)
    doc.add_page()
    _title(doc, report, lang)
    if "site_figures" in report:
        _summary(doc, report, lang)
    for line in report["lines"]:
        _line(doc, line, lang)
    if "site_figures" in report:
        _heading(doc, f"{word('whole_site', lang)}: {word('top_stops', lang)}", 11)
        _stops(doc, report["site_figures"]["top_stops"], lang)
    _comments(doc, report["comments"], lang, report)
    return bytes(doc.output())


def _t(doc: _Doc, text: Any) -> str:
    """Text the current font can print (Helvetica knows only Latin-1)."""
    s = "" if text is None else str(text)
    return s if doc.cjk else s.encode("latin-1", "replace").decode("latin-1")


def _heading(doc: _Doc, text: str, size: float) -> None:
    doc.ln(2)
    doc.set_font(size=size)
    doc.multi_cell(0, size * 0.55, _t(doc, text), new_x="LMARGIN", new_y="NEXT")
    doc.set_font(size=9)
    doc.ln(1)


def _title(doc: _Doc, report: dict[str, Any], lang: Lang) -> None:
    site, shift = report["site"], report["shift"]
    _heading(doc, f"{word('title', lang)} · {site['label']}", 16)
    rows = [
        (word("shift", lang), shift["name"]),
        (word("start", lang), shift["local_start"]),
        (word("end", lang), shift["local_end"]),
        (word("timezone", lang), site["timezone"]),
        (word("generated", lang), report["generated_at"][:19].replace("T", " ") + " UTC"),
    ]
    for key, value in rows:
        doc.cell(32, 5, _t(doc, key))
        doc.cell(0, 5, _t(doc, value), new_x="LMARGIN", new_y="NEXT")


def _table(doc: _Doc, head: list[str], rows: list[list[Any]], widths: tuple[float, ...] | None = None,
           align: str = "RIGHT") -> None:
    """A table; the first column (names) is left-aligned, the others as `align`."""
    doc.set_font(size=7.5)
    aligns = ("LEFT", *(align,) * (len(head) - 1))
    with doc.table(col_widths=widths, text_align=aligns, borders_layout=TableBordersLayout.HORIZONTAL_LINES,
                   line_height=4.6, first_row_as_headings=True,
                   headings_style=_HEAD) as table:
        header = table.row()
        for h in head:
            header.cell(_t(doc, h))
        for r in rows:
            row = table.row()
            for v in r:
                row.cell(_t(doc, v))
    doc.set_font(size=9)
    doc.ln(2)


def _p(x: Any) -> str:
    return pct(x).replace(" ", "")


def _key_row(f: dict[str, Any]) -> list[Any]:
    return [_p(f["oee"]), _p(f["availability"]), _p(f["performance"]), _p(f["quality"]),
            hours(f["planned_s"]), hours(f["run_s"]), f["total"], f["good"], f["stops"], f["failures"],
            f["microstops"], hours(f["mtbf_s"]), hours(f["mttr_s"], 60, 1)]


def _key_head(lang: Lang) -> list[str]:
    keys = ["oee", "a", "p", "q", "planned", "run", "total", "good", "stops", "failures", "microstops", "mtbf",
            "mttr"]
    return [word(f"col.{k}", lang) for k in keys]


def _summary(doc: _Doc, report: dict[str, Any], lang: Lang) -> None:
    _heading(doc, word("whole_site", lang), 12)
    rows = [[report["site"]["label"], *_key_row(report["site_figures"]), ""]]
    for ln in report["lines"]:
        rows.append([ln["label"], *_key_row(ln), pct(ln["target"]["oee"]) if ln["target"] else ""])
    _table(doc, [word("line", lang), *_key_head(lang), word("col.target", lang)], rows,
           (28, *(11.0,) * 13, 11))
    _losses(doc, [report["site"]["label"], *(ln["label"] for ln in report["lines"])],
            [report["site_figures"], *report["lines"]], lang)


def _losses(doc: _Doc, names: list[str], groups: list[dict[str, Any]], lang: Lang) -> None:
    keys = list(LOSSES)
    if any("material_stops" in g["losses_s"] for g in groups):
        keys.append("material_stops")
    rows = [[word(f"loss.{k}", lang), *(hours(g["losses_s"].get(k), 60, 1) for g in groups)] for k in keys]
    width = min(30.0, 130.0 / max(1, len(groups)))
    _table(doc, [word("losses", lang), *names], rows, (52, *(width,) * len(groups)))


def _line(doc: _Doc, ln: dict[str, Any], lang: Lang) -> None:
    _heading(doc, f"{word('line', lang)} · {ln['label']} ({ln['id']})", 12)
    if ln["machines"] == 0:
        doc.cell(0, 5, _t(doc, word("no_data", lang)), new_x="LMARGIN", new_y="NEXT")
        return
    target = ln["target"]
    verdict = ""
    if target is not None and ln["on_target"] is not None:
        verdict = f"{word('target', lang)} {pct(target['oee'])} · {word('on_target', lang)}: " \
                  f"{word('yes' if ln['on_target'] else 'no', lang)}"
    rows = [[ln["label"], *_key_row(ln)]]
    rows += [[m["name"], *_key_row(m)] for m in ln["machine_list"]]
    _table(doc, [word("machine", lang), *_key_head(lang)], rows, (39, *(11.0,) * 13))
    if verdict:
        doc.cell(0, 5, _t(doc, verdict), new_x="LMARGIN", new_y="NEXT")
    _losses(doc, [ln["label"]], [ln], lang)
    doc.cell(0, 5, _t(doc, word("top_stops", lang)), new_x="LMARGIN", new_y="NEXT")
    _stops(doc, ln["top_stops"], lang)


def _stops(doc: _Doc, stops: list[dict[str, Any]], lang: Lang) -> None:
    if not stops:
        doc.cell(0, 5, _t(doc, word("none", lang)), new_x="LMARGIN", new_y="NEXT")
        return
    rows = [[s["code"], s["label"], s["count"], hours(s["seconds"], 60, 1), s["with_reason"], " ".join(s["machines"])]
            for s in stops]
    head = [word(k, lang) for k in ("code", "reason", "count", "minutes", "with_reason", "machines")]
    _table(doc, head, rows, (16, 46, 14, 18, 20, 68), align="LEFT")


def _comments(doc: _Doc, comments: list[dict[str, Any]], lang: Lang, report: dict[str, Any]) -> None:
    _heading(doc, word("comments", lang), 12)
    if not comments:
        doc.cell(0, 5, _t(doc, word("none", lang)), new_x="LMARGIN", new_y="NEXT")
        return
    labels = {ln["id"]: ln["label"] for ln in report["lines"]}
    rows = [[c["local_at"][:16], labels.get(c["line"], c["line"] or word("whole_site", lang)),
             c["author"], c["text"]] for c in comments]
    head = [word(k, lang) for k in ("at", "line", "author", "text")]
    _table(doc, head, rows, (28, 34, 26, 94), align="LEFT")
