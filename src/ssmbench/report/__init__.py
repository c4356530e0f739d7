"""Reports from result rows: Markdown tables, PNG figures, and CSV / JSON / Markdown exports."""

from __future__ import annotations

from pathlib import Path

from ssmbench.files import atomic_write, check_own, own_folder
from ssmbench.report.export import export
from ssmbench.report.markdown import report_markdown
from ssmbench.report.plots import figures

__all__ = ["FIGURES", "REPORT", "export", "write_report"]

REPORT, FIGURES = "report.md", "img"  # the report and its figures' folder, beside the store


def write_report(
    rows: list[dict],
    curves: dict[str, list[dict]],
    meta: dict,
    out_dir: Path,
    costs: list[dict] | None = None,
) -> Path:
    """Write out_dir/img/*.png, then out_dir/report.md that links them; return the report's path.
    `rows` are the training cells, `costs` the cost measurements (one per model × shape).
    OutputError if a file cannot be written, ForeignFile if a link stands where one belongs."""
    out_dir = Path(out_dir)
    report = out_dir / REPORT
    check_own(report)  # before any figure is written
    images = own_folder(out_dir / FIGURES)
    for name, png in figures(rows, curves, costs).items():
        atomic_write(images / name, lambda f, png=png: f.write(png))
    text = report_markdown(rows, curves, meta, costs).encode()
    atomic_write(report, lambda f: f.write(text))
    return report
