"""Reports from result rows: Markdown tables, PNG figures, and CSV / JSON / Markdown exports."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ssmbench.report.export import export
from ssmbench.report.markdown import report_markdown
from ssmbench.report.plots import figures

__all__ = ["export", "write_report"]


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename it over `path` in one step."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is for reading
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


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
        _write_atomic(out_dir / "img" / name, png)
    report = out_dir / "report.md"
    _write_atomic(report, report_markdown(rows, curves, meta, costs).encode())
    return report
