"""Reports from result rows: Markdown tables, PNG figures, and CSV / JSON / Markdown exports."""

from __future__ import annotations

from pathlib import Path

from ssmbench.files import atomic_write
from ssmbench.report.export import export
from ssmbench.report.markdown import report_markdown
from ssmbench.report.plots import figures

__all__ = ["export", "write_report"]


def write_report(
    rows: list[dict],
    curves: dict[str, list[dict]],
    meta: dict,
    out_dir: Path,
    costs: list[dict] | None = None,
) -> Path:
    """Write out_dir/img/*.png, then out_dir/report.md that links them; return the report's path.
    `rows` are the training cells, `costs` the cost measurements (one per model × shape)."""
    out_dir = Path(out_dir)
    (out_dir / "img").mkdir(parents=True, exist_ok=True)
    for name, png in figures(rows, curves, costs).items():
        atomic_write(out_dir / "img" / name, lambda f, png=png: f.write(png))
    report = out_dir / "report.md"
    text = report_markdown(rows, curves, meta, costs).encode()
    atomic_write(report, lambda f: f.write(text))
    return report
