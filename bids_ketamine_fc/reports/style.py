"""HTML building blocks of the reports: the page, tables that fit it, and numbers for reading.

Numbers are formatted for a reader, not a parser (the TSV files keep 6 significant digits):
:func:`fmt` gives 3 significant digits without scientific notation and with thousands
separators (``6,780`` mm3, ``0.142`` mm); :func:`fmt_p` gives p values as ``0.023`` or
``< 0.001``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 margin:0 auto;padding:1.5em 2em;max-width:1180px;color:#222;line-height:1.4}
h1{font-size:1.7em;margin:.2em 0 .4em}h2{font-size:1.3em;margin:1.6em 0 .5em;
 border-bottom:1px solid #ddd;padding-bottom:.2em}h3{font-size:1.05em;margin:1.2em 0 .4em}
.tablewrap{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:85%;margin:.4em 0 .8em}
td,th{border:1px solid #d8d8d8;padding:2px 7px;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td.text,th.text{text-align:left;white-space:normal}
tr.sig td{background:#fde0c5}tr.off td{color:#999}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:.3em 0 .8em;
 font-size:92%}dl.kv dt{color:#555}dl.kv dd{margin:0}
figure{margin:.6em 0 1.2em}figcaption{font-size:85%;color:#444;max-width:780px}
figcaption.title{font-weight:600;color:#222;font-size:100%;margin-bottom:.2em}
img.fig{display:block;max-width:100%;height:auto}
.ok{color:#1a7f37}.bad{color:#b42318}.small{font-size:80%;color:#666}
.note{background:#fff7e6;border-left:4px solid #f0a020;padding:.4em .8em;font-size:92%}
.grid{display:flex;flex-wrap:wrap;gap:10px}.grid figure{margin:0}
pre.methods{white-space:pre-wrap;font-size:85%;background:#f7f7f7;padding:.6em}
"""


def page(title: str, style: str, parts: Iterable[str]) -> str:
    """Return a complete HTML page."""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def _missing(value) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN
    except (TypeError, ValueError):
        return False


def fmt(value, digits: int = 3) -> str:
    """Return a number for reading: ``digits`` significant digits, no exponent, 1,000 separators."""
    if _missing(value):
        return "n/a"
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        and not hasattr(value, "dtype")
    ):
        return str(value)
    value = float(value)
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    if decimals > 6:  # very small: keep 2 significant digits in scientific form
        return f"{value:.1e}"
    return f"{value:,.{decimals}f}"


def fmt_p(value) -> str:
    """Return a p value for reading (plain text): ``0.023``, ``0.0012`` or ``< 0.001``."""
    if _missing(value):
        return "n/a"
    value = float(value)
    if value < 0.001:
        return "< 0.001"
    return f"{value:.3f}" if value >= 0.01 else f"{value:.4f}"


def table(
    rows: list[dict],
    formats: dict[str, str] | None = None,
    highlight: list[bool] | None = None,
    text_columns: Iterable[str] = (),
) -> str:
    """Return ``rows`` as an HTML table in a horizontally scrolling wrapper.

    Parameters
    ----------
    rows : list of dict
        One dict a row; the keys of the first row are the columns.
    formats : dict
        Column -> a ``str.format`` pattern (``"{:.0%}"``) or ``"p"`` (:func:`fmt_p`); other
        numbers use :func:`fmt`.
    highlight : list of bool
        Rows drawn with class ``sig``.
    text_columns : iterable of str
        Columns aligned left and allowed to wrap.
    """
    if not rows:
        return "<p class='small'>(no row)</p>"
    formats = formats or {}
    text = set(text_columns)
    columns = list(rows[0])
    head = "".join(
        f"<th class='{'text' if c in text else ''}'>{html.escape(str(c))}</th>" for c in columns
    )
    body = []
    for k, row in enumerate(rows):
        marked = " class='sig'" if highlight is not None and highlight[k] else ""
        cells = "".join(
            f"<td class='{'text' if c in text else ''}'>{_cell(row.get(c), formats.get(c))}</td>"
            for c in columns
        )
        body.append(f"<tr{marked}>{cells}</tr>")
    return (
        f"<div class='tablewrap'><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _cell(value, pattern: str | None) -> str:
    if _missing(value):
        return "n/a"
    if pattern == "p":
        return html.escape(fmt_p(value))
    if pattern:
        return html.escape(pattern.format(value))
    return html.escape(fmt(value))


def definition_list(items: dict, raw: bool = False) -> str:
    """Return ``{label: value}`` as a two-column definition list.

    Values are plain text (escaped here; numbers through :func:`fmt`), or HTML when ``raw``.
    """

    def shown(value) -> str:
        text = value if isinstance(value, str) else fmt(value)
        return text if raw else html.escape(text)

    rows = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{shown(v)}</dd>" for k, v in items.items())
    return f"<dl class='kv'>{rows}</dl>"
