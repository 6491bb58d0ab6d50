"""The report's charts, read back from the matplotlib Figure that was drawn (artists, not pixels):
the accuracy axis ends at 100 %, the promised Pareto front is drawn, every artifact has its own
label, and the legend shows only markers that points use."""

from __future__ import annotations

import pytest

from edgec import plots

pytest.importorskip("matplotlib")


def _row(rid, precision, build, median, accuracy, *, model="digits", device="cpu-1", kib=80.0, energy=None,
         sha=None):
    return {"result_id": rid, "created": f"2026-12-01T10:{rid:02d}:00+00:00", "model": model, "device": device,
            "device_model": "x86_64", "file": "x86-cpu/model.tflite", "build_dir": f"/builds/{build}",
            "artifact_sha256": sha or f"{rid:064x}", "precision": precision, "runtime": "litert",
            "latency_min_ms": median * 0.9, "latency_median_ms": median, "latency_p90_ms": median * 1.2,
            "latency_p99_ms": median * 1.5, "accuracy_pct": accuracy, "size_kib": kib, "energy_mj": energy,
            "speedup_vs_fp32": None}


def _rows():
    # int8 is faster and as accurate: a one-point front, which the old plot promised but never drew
    return [_row(1, "fp32", "fp32", 0.40, 98.9, kib=300.0), _row(2, "int8", "int8", 0.15, 99.2, kib=80.0)]


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def test_accuracy_axis_ends_at_100_and_front_is_drawn():
    with plots.drawing():
        fig = plots.report_figure(_rows())
        acc = fig.axes[0]
        assert acc.get_ylim()[1] <= 100.0  # the old axis went to ~105 %
        assert acc.get_ylim()[0] < 98.9
        fronts = [line for line in acc.lines if line.get_gid() == "pareto"]
        assert len(fronts) == 1 and fronts[0].get_linestyle() == "--"
        assert list(fronts[0].get_xdata()) == [0.15] and list(fronts[0].get_ydata()) == [99.2]
        assert "dashed: Pareto front" in acc.get_title()
        assert [t.get_text() for t in acc.get_legend().get_texts()] == ["Pareto front"]


def test_front_of_two_points_joins_them():
    rows = [_row(1, "fp32", "fp32", 0.40, 99.5), _row(2, "int8", "int8", 0.15, 98.0),
            _row(3, "fp16", "fp16", 0.45, 99.0)]  # fp16 is beaten by fp32 on both
    with plots.drawing():
        fig = plots.report_figure(rows)
    (front,) = [line for line in fig.axes[0].lines if line.get_gid() == "pareto"]
    assert list(zip(front.get_xdata(), front.get_ydata(), strict=True)) == [(0.15, 98.0), (0.40, 99.5)]


def test_each_artifact_has_its_own_label_and_marker():
    with plots.drawing():
        fig = plots.report_figure(_rows())
    labels = _texts(fig.axes[0])
    assert len(labels) == 2 and len(set(labels)) == 2  # both were 'x86-cpu/model.tflite'
    assert any(lab.startswith("fp32 ") for lab in labels) and any(lab.startswith("int8 ") for lab in labels)
    markers = {c.lines[0].get_marker() for c in fig.axes[0].containers}
    assert markers == {"o", "^"}
    # an unknown precision never borrows fp32's marker
    assert plots.marker("mixed") not in plots.MARKERS.values()


def test_legend_shows_only_markers_that_points_use():
    with plots.drawing():
        fig = plots.report_figure(_rows())
    size = fig.axes[1]
    used = {c.lines[0].get_marker() for c in size.containers}
    legend = size.get_legend()
    shown = {h.get_marker() for h in legend.legend_handles if h.get_marker() not in (None, "None", "")}
    assert shown == used == {"o", "^"}  # the old legend showed a square no point used
    assert [t.get_text() for t in legend.get_texts()] == ["digits on cpu-1", "fp32", "int8"]


def test_energy_panel_only_where_measured_and_labels_are_not_math():
    rows = _rows()
    with plots.drawing():
        assert len(plots.report_figure(rows).axes) == 2
    rows[1]["energy_mj"] = 0.8
    rows[0]["device"] = rows[1]["device"] = "$x^2$<b>"
    with plots.drawing():
        fig = plots.report_figure(rows)
        svg = plots.render(fig, "svg")
    assert len(fig.axes) == 3 and fig.axes[2].get_ylim()[1] <= 100.0
    assert "$x^2$<b>" in fig.get_suptitle()  # drawn as written, no math text
    assert b"<script" not in svg and b"<b>" not in svg


def test_report_plot_writes_a_png(tmp_path):
    from edgec import report

    path = report.plot(_rows(), tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_history_has_a_line_per_artifact():
    rows = _rows() + [_row(5, "int8", "int8", 0.16, 99.2, sha=f"{2:064x}")]
    with plots.drawing():
        fig = plots.history_figure(rows)
    lines = [line for line in fig.axes[0].lines if line.get_gid() == "history"]
    assert sorted(len(line.get_xdata()) for line in lines) == [1, 2]
