"""The frame and the style sheet of ``payrecon report``'s page (``report_html`` fills it).

Everything is inline: the page loads no font, style sheet or script, so it opens offline.
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
{body}
</body>
</html>
"""

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial,
  sans-serif; color: #1d1d1f; margin: 2rem auto; max-width: 1100px; padding: 0 1rem;
  line-height: 1.4; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; }
h2 { font-size: 1.25rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem;
  margin-top: 2.2rem; }
h3 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
.meta, .note { color: #555; font-size: .9rem; }
code { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  font-size: .9em; }
table { border-collapse: collapse; margin: .4rem 0 1rem; font-size: .9rem; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #e5e5e5; text-align: left;
  vertical-align: top; }
thead th { background: #f5f5f7; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv th { font-weight: normal; color: #555; }
table.kv { max-width: 36rem; }
table.kv td { font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
tr.total td { font-weight: bold; border-top: 2px solid #ccc; }
tr.selected td { background: #fff8e1; }
.status { padding: .05rem .45rem; border-radius: .6rem; font-size: .85rem; }
.status.ok { background: #e8f5e9; color: #1b5e20; }
.status.bad { background: #ffebee; color: #b71c1c; }
.cols { display: flex; gap: 2.5rem; flex-wrap: wrap; align-items: flex-start; }
.scroll { overflow-x: auto; }
thead th.num { white-space: normal; }
.compact table { font-size: .82rem; }
.compact th, .compact td { padding: .25rem .45rem; }
.nowrap { white-space: nowrap; }
tr.detail td { border-top: none; padding-left: 1.6rem; }
.error { color: #b71c1c; overflow-wrap: anywhere; }
figure.chart { margin: .5rem 0; }
figure.chart svg { max-width: 100%; height: auto; }
@media print { body { margin: 0; max-width: none; } section { break-inside: avoid; } }
"""
