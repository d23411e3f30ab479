"""The scalar history of a run: `metrics.csv` and a `curves.png` of loss and Dice in the job folder."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from vessa.io.atomic import atomic_path

CSV_NAME = "metrics.csv"
PLOT_NAME = "curves.png"


class MetricHistory:
    """Rows of scalars keyed by step; written whole (atomically) at each checkpoint and at the end."""

    def __init__(self, job_dir: str | os.PathLike):
        self.job_dir = Path(job_dir)
        self.rows: list[dict[str, float]] = []

    def add(self, step: int, values: dict[str, float]) -> None:
        """Record `values` for `step` (a later row for the same step replaces the earlier one)."""
        if self.rows and self.rows[-1]["step"] == step:
            self.rows[-1].update(values)
        else:
            self.rows.append({"step": step, **values})

    def load(self, up_to_step: int) -> None:
        """Read an existing metrics.csv, keeping the rows up to `up_to_step` (a resumed run's start)."""
        path = self.job_dir / CSV_NAME
        if not path.is_file():
            return
        with path.open(newline="", encoding="utf-8") as stream:
            rows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(stream)]
        self.rows = [{**row, "step": int(row["step"])} for row in rows if "step" in row and row["step"] <= up_to_step]

    def columns(self) -> list[str]:
        """"step" then every other key in first-seen order."""
        names = {"step": None}
        for row in self.rows:
            names.update(dict.fromkeys(row))
        return list(names)

    def write_csv(self) -> Path:
        """Write metrics.csv (floats in repr form, so they read back exactly)."""
        path = self.job_dir / CSV_NAME
        with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=self.columns(), restval="")
            writer.writeheader()
            writer.writerows(self.rows)
        return path

    def series(self, name: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one column, skipping rows without a finite value."""
        points = [(r["step"], r[name]) for r in self.rows if name in r and math.isfinite(r[name])]
        return [p[0] for p in points], [p[1] for p in points]

    def write_plot(self) -> Path:
        """Write curves.png: training loss, and training/validation Dice when logged."""
        from matplotlib.figure import Figure  # no pyplot: renders with Agg, touches no global backend

        figure = Figure(figsize=(9, 3.5), layout="constrained")
        loss_axes, dice_axes = figure.subplots(1, 2)
        loss_axes.plot(*self.series("loss"), label="training loss")
        loss_axes.set(xlabel="step", ylabel="loss", title="Loss")
        for name, label in (("dice", "training Dice"), ("val_dice", "validation Dice")):
            steps, values = self.series(name)
            if steps:
                dice_axes.plot(steps, values, marker="o" if name == "val_dice" else None, label=label)
        dice_axes.set(xlabel="step", ylabel="Dice", title="Dice", ylim=(0, 1))
        for axes in (loss_axes, dice_axes):
            if axes.get_legend_handles_labels()[0]:
                axes.legend()
        path = self.job_dir / PLOT_NAME
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=100)
        return path

    def write(self) -> None:
        """Write both metrics.csv and curves.png."""
        self.write_csv()
        self.write_plot()
