"""What accuracy-aware int8 reports: the manifest's ``accuracy_control`` section, the tables of
``edgec analyze`` and ``edgec build --accuracy-control``, and the SQNR plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgec.accuracy.base import Backend
from edgec.accuracy.metric import Metric
from edgec.accuracy.search import ControlResult

RANKING_KEPT = 10


def _share(part: float, total: float) -> float:
    return round(part / total, 6) if total else 0.0


def control_section(result: ControlResult, backend: Backend, metric: Metric, artifact: str) -> dict[str, Any]:
    """The manifest's ``accuracy_control``: the ops kept in float (with their share of parameters and
    MACs), the drop before and after, the size change, the ranking and every step."""
    by_id = {o.id: o for o in backend.ops}
    plain = result.plain
    alone = {c.ops[0]: e for c, e in result.ranking if c.kind == "op"}
    chosen = [o for o in backend.ops if o.id in result.chosen]
    params, macs = sum(o.params for o in backend.ops), sum(o.macs for o in backend.ops)
    rows = []
    for o in chosen:
        row = {k: v for k, v in o.describe().items() if k in ("id", "index", "op", "layer", "params", "macs")}
        row["sensitivity_points"] = (round((alone[o.id].score.value - plain.score.value) * 100.0, 4)
                                     if o.id in alone else None)
        rows.append(row)

    def state(e):
        return {**e.score.to_json(), "bytes": e.bytes}

    return {
        "artifact": artifact,
        "target_kind": backend.kind,
        "metric": metric.describe(),
        "budget_points": result.budget,
        "met": result.met,
        "before": state(plain),
        "after": state(result.final),
        "float_ops": rows,
        "float_params": int(sum(o.params for o in chosen)),
        "float_params_share": _share(sum(o.params for o in chosen), params),
        "float_macs": int(sum(o.macs for o in chosen)),
        "float_macs_share": _share(sum(o.macs for o in chosen), macs),
        "size_change_bytes": result.final.bytes - plain.bytes,
        "size_change_share": _share(result.final.bytes - plain.bytes, plain.bytes),
        "quantizable_ops": len(backend.ops),
        "evaluations": result.evaluations,
        "ranking": [{"kind": c.kind, "ops": list(c.ops), "layers": c.label or "+".join(by_id[i].layer for i in c.ops),
                     "value": round(e.score.value, 6), "drop_points": e.score.drop_points,
                     "sqnr_db": e.score.to_json()["sqnr_db"]} for c, e in result.ranking[:RANKING_KEPT]],
        "steps": [{"action": s["action"], "kind": s["candidate"].kind, "ops": list(s["candidate"].ops),
                   "layers": s["candidate"].label or "+".join(by_id[i].layer for i in s["candidate"].ops),
                   "float_ops": len(s["float_ops"]), "value": round(s["score"].value, 6),
                   "drop_points": s["score"].drop_points} for s in result.steps],
    }


def _points(x: float | None) -> str:
    return "-" if x is None else f"{x:+.2f}"


def _scale(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _weight_scale(w: dict | None) -> str:
    if not w:
        return "-"
    if w["channels"] <= 1 or w["min"] == w["max"]:
        return _scale(w["min"])
    return f"{w['min']:.2g}..{w['max']:.2g}"


def control_table(section: dict[str, Any]):
    """One table: the ops kept in float, their parameters, MACs and sensitivity, and the totals; the
    title carries the drop before and after, the caption the size change."""
    from rich.markup import escape
    from rich.table import Table

    from edgec.util import human_bytes

    before, after = section["before"], section["after"]
    metric = section["metric"]
    what = (f"accuracy on {metric['samples']} labelled samples" if metric["labelled"]
            else f"top-1 agreement with the float model on {metric['samples']} samples (no labels)")
    verdict = "met" if section["met"] else "[red]NOT met[/]: the best found"
    n = len(section["float_ops"])
    table = Table(title=(f"accuracy control: {n} of {section['quantizable_ops']} ops kept in float; drop "
                         f"{before['drop_points']:.2f} -> {after['drop_points']:.2f} points, budget "
                         f"{section['budget_points']:g} ({verdict})"), title_justify="left", min_width=100)
    for col, justify in (("op", "left"), ("layer", "left"), ("params", "right"), ("MACs", "right"),
                         ("sensitivity (pts)", "right")):
        table.add_column(col, justify=justify)
    for o in section["float_ops"]:
        table.add_row(f"#{o['index']} {o['op']}", escape(o["layer"]), f"{o['params']:,}", f"{o['macs']:,}",
                      _points(o.get("sensitivity_points")))
    if not n:
        table.add_row("-", "plain int8 is within the budget" if section["met"] else "-", "-", "-", "-")
    table.add_row("total in float", "", f"{section['float_params']:,} ({section['float_params_share'] * 100:.1f} %)",
                  f"{section['float_macs']:,} ({section['float_macs_share'] * 100:.1f} %)", "", end_section=True)
    change = section["size_change_bytes"]
    table.caption = (f"metric: {what}; {section['artifact']} {human_bytes(before['bytes'])} as plain int8 -> "
                     f"{human_bytes(after['bytes'])} ({'+' if change >= 0 else ''}{section['size_change_share'] * 100:.1f} %); "
                     f"{section['evaluations']} configurations measured")
    table.caption_justify = "left"
    return table


def analysis_table(analysis: dict[str, Any], sort: str = "graph"):
    """Per op: scales, per-layer RMSE (in quantization steps) and SQNR, the sensitivity."""
    from rich.markup import escape
    from rich.table import Table

    metric, plain = analysis["metric"], analysis["plain"]
    what = (f"accuracy {metric['float_value'] * 100:.2f} % float -> {plain['value'] * 100:.2f} % int8"
            if metric["labelled"] else f"top-1 agreement with float {plain['value'] * 100:.2f} % (no labels)")
    rows = analysis["ops"]
    if sort == "sensitivity":
        rows = sorted(rows, key=lambda r: r["rank"])
    grouped = any("output_float" in r for r in rows)
    table = Table(title=(f"{analysis['kind']} int8, per quantizable op ({len(rows)}; {'by sensitivity' if sort == 'sensitivity' else 'graph order'}): "
                         f"{what}, drop {plain['drop_points']:.2f} points on {metric['samples']} samples of "
                         f"{metric['data']}"), title_justify="left")
    cols = [("rank", "right"), ("op", "left"), ("layer", "left"), ("w scale", "right"), ("act scale in->out", "right"),
            ("RMSE/step", "right"), ("SQNR dB", "right"), ("sens. pts", "right"), ("out SQNR +dB", "right")]
    if grouped:
        cols.append(("out float pts", "right"))
    for col, justify in cols:
        table.add_column(col, justify=justify, no_wrap=True)
    for r in rows:
        row = [str(r["rank"]), f"#{r['index']} {r['op']}", escape(r["short_layer"]), _weight_scale(r["weight_scale"]),
               f"{_scale(r['input_scale'])} -> {_scale(r['output_scale'])}",
               "-" if r["rmse_steps"] is None else f"{r['rmse_steps']:.3f}",
               "exact" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f}",
               _points(r["sensitivity_points"]),
               "-" if r["sensitivity_sqnr_db"] is None else f"{r['sensitivity_sqnr_db']:+.2f}"]
        if grouped:
            row.append(_points(r["output_float"]["sensitivity_points"]) if "output_float" in r else "-")
        table.add_row(*row)
    table.caption = ("sens.: the metric with that op alone in float minus plain int8 (points); out SQNR +dB: the "
                     "change of the output's SQNR then; RMSE/step, SQNR: the op's int8 output against its float "
                     "output on the same input (0.29 steps is rounding alone); w scale: per-channel min..max"
                     + ("; out float: the op and its consumers in float (its output tensor stays float)"
                        if grouped else "") + "; layer +N: N more layers fused into the op")
    table.caption_justify = "left"
    return table


def plot(analysis: dict[str, Any], path: Path) -> Path:
    """Per op, in graph order, as a PNG: the per-layer SQNR (int8 against float, same input) and the
    sensitivity (the metric change, and the output's SQNR change, with that op alone in float)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = analysis["ops"]
    labels = [f"#{r['index']} {r['short_layer']}" for r in rows]
    positions = list(range(len(rows)))
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(max(6.0, 0.55 * len(rows) + 2), 8.0), sharex=True)
    top.bar(positions, [r["sqnr_db"] if r["sqnr_db"] is not None else 0.0 for r in rows], color="tab:blue")
    top.set_ylabel("layer SQNR (dB)")
    top.set_title(f"{analysis['kind']} int8 of {analysis.get('model', {}).get('name', 'the model')}: per layer")
    sens = [r["sensitivity_points"] for r in rows]
    middle.bar(positions, sens, color=["tab:red" if v > 0 else "tab:gray" for v in sens])
    middle.axhline(0, color="black", linewidth=0.5)
    unit = "accuracy" if analysis["metric"]["labelled"] else "agreement"
    middle.set_ylabel(f"{unit} gain (pts)\nop alone in float")
    gains = [r["sensitivity_sqnr_db"] or 0.0 for r in rows]
    bottom.bar(positions, gains, color=["tab:green" if v > 0 else "tab:gray" for v in gains])
    bottom.axhline(0, color="black", linewidth=0.5)
    bottom.set_ylabel("output SQNR gain (dB)\nop alone in float")
    bottom.set_xticks(positions)
    bottom.set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def remedies_table(section: dict[str, Any]):
    """The remedies tried before any op was kept in float, each with its measured drop, and the
    LiteRT latency cost of every layer kept in 16-bit or float. ``None`` without remedies."""
    from rich.markup import escape
    from rich.table import Table

    from edgec.util import human_bytes

    remedies = section.get("remedies")
    if not remedies and not section.get("latency_cost"):
        return None
    table = Table(title=(f"integer remedies, in order of cost (chosen: {' + '.join(remedies['chosen']) or 'none'})"
                         if remedies else "latency cost of what is kept in float"), title_justify="left")
    if remedies:
        for col, justify in (("remedies", "left"), ("drop (pts)", "right"), ("size", "right"), ("kept", "left")):
            table.add_column(col, justify=justify)
        for row in remedies["tried"]:
            table.add_row(escape(row["label"]), f"{row['drop_points']:.2f}", human_bytes(row["bytes"]),
                          "yes" if row["kept"] else "no")
    costs = section.get("latency_cost") or []
    if costs:
        table.caption = "LiteRT latency cost on this host (batch 1, 1 thread): " + "; ".join(
            f"{c['what']}{' (' + c['layers'] + ')' if c['layers'] and c['layers'] != 'all' else ''} "
            f"{c['cost_ms'] * 1000:+.1f} us" for c in costs)
        table.caption_justify = "left"
    elif remedies:
        table.caption = "nothing kept in 16-bit or float: no latency cost"
        table.caption_justify = "left"
    if not remedies:
        table.add_column("latency")
        table.add_row("see caption")
    return table


def alone_table(analysis: dict[str, Any]):
    """``edgec analyze``'s remedies: plain int8 and each remedy alone, with the drop it measured."""
    from rich.markup import escape
    from rich.table import Table

    from edgec.util import human_bytes

    table = Table(title="integer remedies, each alone (in order of cost)", title_justify="left")
    for col, justify in (("remedy", "left"), ("drop (pts)", "right"), ("vs plain (pts)", "right"), ("size", "right")):
        table.add_column(col, justify=justify)
    rows = analysis["remedies"]["rows"]
    plain = rows[0]["drop_points"]
    for row in rows:
        table.add_row(escape(row["label"]), f"{row['drop_points']:.2f}", f"{row['drop_points'] - plain:+.2f}",
                      human_bytes(row["bytes"]))
    table.caption = ("the flags: --equalize, --bias-correct, --range percentile|mse, --adaround, --int16-activations; "
                     "--accuracy-control tries them in this order before keeping ops in float")
    table.caption_justify = "left"
    return table
