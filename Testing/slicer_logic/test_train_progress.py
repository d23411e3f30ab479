"""ProgressModel (events -> fraction, ETA, series, log lines) and PlotLogic (series -> real plot nodes)."""

from __future__ import annotations

import numpy as np
import pytest
from VESSATrainLib.progress_model import ProgressModel, formatDuration


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("seconds", "text"), [(0, "0 s"), (44.6, "45 s"), (59.4, "59 s"), (61, "1 min"),
                                               (725, "12 min"), (3600, "1 h 00 min"), (7530, "2 h 06 min"),
                                               (-3, "0 s")])
def test_format_duration(seconds, text):
    assert formatDuration(seconds) == text


def test_two_stage_progress_fraction_eta_and_series():
    clock = Clock()
    model = ProgressModel(["stage1", "stage2"], clock=clock)
    assert model.fraction == 0 and model.etaText() == ""
    assert model.update({"event": "started", "stage": "stage1", "step": 0, "total": 100}) == \
        "stage 1: started at step 0 of 100"
    clock.now += 30
    line = model.update({"event": "progress", "stage": "stage1", "step": 50, "total": 100, "loss": 0.5,
                         "dice": 0.25, "lr": 1e-4, "eta_s": 750.0})
    assert line == "stage 1 step 50/100: loss 0.5, dice 0.25, lr 0.0001"
    assert model.fraction == pytest.approx(0.25)
    assert model.etaText() == "about 12 min left in stage 1, then stage 2"
    assert model.elapsedSeconds == 30
    model.update({"event": "progress", "stage": "stage1", "step": 60, "total": 100, "loss": 0.4, "dice": None,
                  "eta_s": 30})
    assert model.series["stage1"] == {"loss": [(50, 0.5), (60, 0.4)], "dice": [(50, 0.25)], "lr": [(50, 1e-4)]}
    assert model.lastMetrics("stage1") == {"loss": 0.4, "dice": 0.25, "lr": 1e-4}
    model.update({"event": "finished", "stage": "stage1", "step": 100, "total": 100, "checkpoint": "/j/s1.pt"})
    assert model.fraction == pytest.approx(0.5)
    assert model.checkpoints == {"stage1": "/j/s1.pt"}
    model.update({"event": "started", "stage": "stage2", "step": 0, "total": 10})
    model.update({"event": "progress", "stage": "stage2", "step": 5, "total": 10, "loss": 1.0, "eta_s": 5})
    assert model.fraction == pytest.approx(0.75)
    assert model.etaText() == "about 5 s left"
    assert model.series["stage2"] == {"loss": [(5, 1.0)]}


def test_resume_drops_the_points_after_the_checkpoint_step():
    model = ProgressModel(["stage1"])
    for step in (10, 20, 30):
        model.update({"event": "progress", "stage": "stage1", "step": step, "total": 40, "loss": 1 / step})
    assert model.update({"event": "cancelled", "stage": "stage1", "step": 30, "checkpoint": "c20.pt"}) == \
        "stage 1 cancelled at step 30; checkpoint kept: c20.pt"
    model.update({"event": "started", "stage": "stage1", "step": 20, "total": 40})
    model.update({"event": "progress", "stage": "stage1", "step": 30, "total": 40, "loss": 0.05})
    assert model.series["stage1"]["loss"] == [(10, 0.1), (20, 0.05), (30, 0.05)]
    assert model.fraction == pytest.approx(0.75)


def test_log_checkpoint_and_error_events():
    model = ProgressModel(["stage2"])
    assert model.update({"event": "log", "stage": "stage2", "message": "3 unlabelled cases"}) == \
        "stage 2: 3 unlabelled cases"
    assert model.update({"event": "checkpoint", "stage": "stage2", "step": 5, "path": "/j/5.pt", "val_dice": 0.625,
                         "val_loss": None}) == "stage 2: checkpoint /j/5.pt, val_dice 0.625"
    assert model.series["stage2"] == {"val_dice": [(5, 0.625)]}
    assert model.update({"event": "error", "stage": "stage2", "message": "CUDA out of memory"}) == \
        "stage 2 error: CUDA out of memory"
    assert model.error == "CUDA out of memory" and model.checkpoints == {"stage2": "/j/5.pt"}


def test_plot_nodes_follow_the_series(slicer_scene):
    import slicer
    from VESSATrainLib.plot_logic import PlotLogic

    plots = PlotLogic(slicer_scene)
    chart = plots.update({"stage1": {"loss": [(1, 0.9), (2, 0.7)], "dice": [(2, 0.3)], "lr": [(1, 1e-4)]},
                          "stage2": {}})
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    names = sorted(chart.GetNthPlotSeriesNode(i).GetName() for i in range(2))
    assert names == ["stage 1 dice", "stage 1 loss"]
    loss = next(chart.GetNthPlotSeriesNode(i) for i in range(2) if chart.GetNthPlotSeriesNode(i).GetName()
                == "stage 1 loss")
    assert (loss.GetXColumnName(), loss.GetYColumnName()) == ("step", "loss")
    np.testing.assert_array_equal(slicer.util.arrayFromTableColumn(loss.GetTableNode(), "loss"), [0.9, 0.7])

    assert plots.update({"stage1": {"loss": [(1, 0.9), (2, 0.7), (3, 0.5)], "dice": [(2, 0.3)]},
                         "stage2": {"loss": [(1, 2.0)]}}) is chart
    assert chart.GetNumberOfPlotSeriesNodes() == 3
    np.testing.assert_array_equal(slicer.util.arrayFromTableColumn(loss.GetTableNode(), "step"), [1, 2, 3])
    stage2 = next(chart.GetNthPlotSeriesNode(i) for i in range(3) if chart.GetNthPlotSeriesNode(i).GetName()
                  == "stage 2 loss")
    assert stage2.GetColor() == loss.GetColor()
    assert stage2.GetLineStyle() != loss.GetLineStyle()

    assert plots.viewNode().GetPlotChartNodeID() == chart.GetID()
    assert plots.viewNode() is plots.viewNode()
    before = slicer_scene.GetNumberOfNodes()
    plots.clear()
    assert slicer_scene.GetNumberOfNodes() == before - 8  # view, chart, 3 series, 3 tables
    assert plots.update({"stage1": {"loss": [(1, 1.0)]}}).GetNumberOfPlotSeriesNodes() == 1


def test_a_time_budget_drives_fraction_and_eta():
    clock = Clock()
    model = ProgressModel(["stage2"], clock=clock)
    model.timeBudgets["stage2"] = 600.0
    model.update({"event": "started", "stage": "stage2", "step": 0, "total": 1_000_000})
    clock.now += 150
    model.update({"event": "progress", "stage": "stage2", "step": 300, "total": 1_000_000, "eta_s": 500_000})
    assert model.fraction == pytest.approx(0.25)
    assert model.etaText() == "about 8 min left"
    clock.now += 500
    assert model.fraction == 1.0 and model.etaText() == "about 0 s left"
