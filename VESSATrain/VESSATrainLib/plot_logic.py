"""Training curves as Slicer plot nodes: a table and a line series per (stage, metric), one chart."""

from __future__ import annotations

import numpy as np
import slicer

from VESSATrainLib.progress_model import STAGE_TITLES

# The curves shown (other metrics, e.g. lr and grad_norm, stay in the log and metrics.csv), with
# their line colours (r, g, b).
METRIC_COLORS = {"loss": (0.85, 0.33, 0.10), "dice": (0.0, 0.45, 0.74), "val_dice": (0.47, 0.67, 0.19)}
STAGE_LINE_STYLES = {"stage1": "solid", "stage2": "dash"}


class PlotLogic:
    """Keeps the plot nodes of the training curves in `scene` up to date.

    `update(series)` takes `ProgressModel.series` ({stage: {metric: [(step, value), ...]}}) and
    creates or refills the nodes of the METRIC_COLORS metrics; `clear()` removes every node it
    created. Only these nodes are ever touched.
    """

    def __init__(self, scene=None, name: str = "VESSA training"):
        self.scene = scene or slicer.mrmlScene
        self.name = name
        self.chart = None
        self.view = None
        self._tables: dict[tuple[str, str], object] = {}
        self._series: dict[tuple[str, str], object] = {}

    def update(self, series: dict[str, dict[str, list[tuple[int, float]]]]):
        """Write every (stage, metric) curve into its table; returns the chart node."""
        chart = self._chart()
        for stage, metrics in series.items():
            for metric, points in metrics.items():
                if not points or metric not in METRIC_COLORS:
                    continue
                key = (stage, metric)
                if key not in self._tables:
                    self._addSeries(chart, key)
                slicer.util.updateTableFromArray(self._tables[key], np.asarray(points, dtype=np.float64),
                                                 ["step", metric])
        return chart

    def viewNode(self):
        """A plot view node showing the chart, for the panel's plot widget (created once)."""
        if self.view is None or self.view.GetScene() is not self.scene:
            self.view = self.scene.AddNewNodeByClass("vtkMRMLPlotViewNode", f"{self.name} view")
        self.view.SetPlotChartNodeID(self._chart().GetID())
        return self.view

    def clear(self) -> None:
        """Remove the chart, series, tables and view node from the scene."""
        for node in [*self._series.values(), *self._tables.values(), self.chart, self.view]:
            if node is not None and node.GetScene() is self.scene:
                self.scene.RemoveNode(node)
        self.chart = self.view = None
        self._tables.clear()
        self._series.clear()

    def _chart(self):
        if self.chart is None or self.chart.GetScene() is not self.scene:
            self.chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", self.name)
            self.chart.SetTitle(self.name)
            self.chart.SetXAxisTitle("step")
            self.chart.SetYAxisTitle("loss / Dice")
            self.chart.SetLegendVisibility(True)
        return self.chart

    def _addSeries(self, chart, key: tuple[str, str]) -> None:
        stage, metric = key
        label = f"{STAGE_TITLES.get(stage, stage)} {metric}"
        table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{self.name} {label}")
        series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", label)
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("step")
        series.SetYColumnName(metric)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
        series.SetLineStyle(series.GetLineStyleFromString(STAGE_LINE_STYLES.get(stage, "dot")))
        series.SetColor(*METRIC_COLORS[metric])
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
        self._tables[key] = table
        self._series[key] = series
