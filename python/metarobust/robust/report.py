"""The robustness report: ``robustness.json``, ``robustness.csv``, ``robustness.png`` and a
table for the terminal, from the results of :func:`metarobust.robust.suite.run_suite`.

``robustness.json`` is the result object (``{"run": ..., "rows": [...], ...}``);
``robustness.csv`` holds the same rows (columns :data:`COLUMNS`, and :data:`AUROC_COLUMNS`
when some row has them (the ``open_set`` family), floats written in full so they read back
equal); the PNG has one panel per family (the domain-shift targets share one
panel) with accuracy and its 95% CI band against strength, the clean accuracy of each run as
a horizontal dotted line and chance (``1 / ways``) in grey; several runs share each panel,
one colour per run. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data.atomic import replace_file

__all__ = ["AUROC_COLUMNS", "COLUMNS", "format_table", "load_result", "plot_results",
           "read_csv", "write_report"]

COLUMNS = ("family", "setting", "strength", "effective", "accuracy", "ci95", "episodes")
AUROC_COLUMNS = ("auroc", "auroc_ci95")  # open_set rows: AUROC of the score in `setting`
FILES = ("robustness.json", "robustness.csv", "robustness.png")


def load_result(path: str | os.PathLike) -> dict[str, Any]:
    """A saved result: ``robustness.json`` itself or a directory holding it."""
    p = Path(path)
    if p.is_dir():
        p = p / "robustness.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no robustness.json (run `metarobust robustness` first)")
    with open(p) as f:
        result = json.load(f)
    if not isinstance(result, dict) or not isinstance(result.get("rows"), list):
        raise ValueError(f"{p}: not a robustness result (expected an object with 'rows')")
    return result


def read_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``robustness.csv``, typed as in the JSON."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{"family": r["family"], "setting": r["setting"], "strength": float(r["strength"]),
             "effective": float(r.get("effective") or r["strength"]),
             "accuracy": float(r["accuracy"]), "ci95": float(r["ci95"]),
             "episodes": int(r["episodes"]),
             **{c: float(r[c]) for c in AUROC_COLUMNS if r.get(c)}} for r in rows]


def effective(row: dict[str, Any]) -> float:
    """The strength a row applied (reports written before rows carried it: the strength)."""
    return float(row.get("effective", row["strength"]))


def _csv_bytes(rows: Sequence[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    columns = COLUMNS + (AUROC_COLUMNS if any("auroc" in r for r in rows) else ())
    w.writerow(columns)
    for r in rows:
        w.writerow([repr(r[c]) if isinstance(r.get(c), float) else r.get(c, "")
                    for c in columns])
    return buf.getvalue().encode()


def _label(result: dict[str, Any], index: int) -> str:
    run = result.get("run")
    return Path(str(run)).name if run else f"run {index + 1}"


def _labels(results: Sequence[dict[str, Any]], unpaired_mark: str = " (unpaired)"
            ) -> list[str]:
    labels = [_label(r, i) for i, r in enumerate(results)]
    for i, lab in enumerate(labels):  # disambiguate runs of the same folder name
        if labels.count(lab) > 1:
            run = results[i].get("run")
            labels[i] = f"{Path(str(run)).parent.name}/{lab}" if run else f"{lab} ({i + 1})"
    return [lab + unpaired_mark if res.get("unpaired") else lab
            for lab, res in zip(labels, results)]


def _format_strength(family: str, strength: float, applied: float) -> str:
    if family.startswith("label_noise") and abs(applied - strength) > 1e-9:
        return f"{strength:g}→{applied:.3g}"  # the rate asked for, the fraction corrupted
    if family in ("fgsm", "pgd", "pgd_support"):
        v = strength * 255
        return f"{v:g}/255" if abs(v - round(v, 3)) < 1e-9 else f"{strength:.4g}"
    if family.startswith("corruption:"):
        return f"{strength:g}"
    if family == "clean" or family.startswith("domain_shift:"):
        return "-"
    return f"{strength:g}"


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """A text table: one line per (family, setting, strength), one column per run with
    accuracy ± 95% CI in percent; a run marked ``unpaired`` (evaluated on other episodes) is
    starred and explained under the table."""
    labels = _labels(results, unpaired_mark="*")
    keys: list[tuple[str, str, float, float]] = []
    values: list[dict[tuple, str]] = []
    for res in results:
        vals = {}
        for r in res["rows"]:
            key = (r["family"], r["setting"], float(r["strength"]), effective(r))
            if key not in vals and key not in keys:
                keys.append(key)
            vals[key] = f"{100 * r['accuracy']:6.2f} ± {100 * r['ci95']:5.2f}"
            if "auroc" in r:
                vals[key] += f", AUROC {r['auroc']:.3f} ± {r['auroc_ci95']:.3f}"
        values.append(vals)
    wf = max([len("family")] + [len(k[0]) for k in keys])
    ws = max([len("setting")] + [len(k[1]) for k in keys])
    wv = max([16] + [len(lab) for lab in labels])
    wt = max([8] + [len(_format_strength(k[0], k[2], k[3])) for k in keys])
    head = f"{'family':{wf}s}  {'setting':{ws}s}  {'strength':>{wt}s}  " + "  ".join(
        f"{lab:>{wv}s}" for lab in labels)
    lines = [head, "-" * len(head)]
    for key in keys:
        cells = "  ".join(f"{vals.get(key, '-'):>{wv}s}" for vals in values)
        lines.append(f"{key[0]:{wf}s}  {key[1]:{ws}s}  "
                     f"{_format_strength(key[0], key[2], key[3]):>{wt}s}  {cells}")
    eps = {res.get("episodes") for res in results}
    fewer = sorted({f"{r['family']}: {r['episodes']}" for res in results for r in res["rows"]
                    if r.get("episodes", res.get("episodes")) != res.get("episodes")})
    if any("auroc" in r for res in results for r in res["rows"]):
        lines.append("open_set: accuracy on the known queries; AUROC of the setting's score "
                     "(known vs unknown queries)")
    lines.append(f"accuracy in % ± 95% CI half-width over "
                 f"{'/'.join(str(e) for e in sorted(eps, key=str))} episodes per cell"
                 + (f" ({', '.join(fewer)})" if fewer else ""))
    for lab, res in zip(labels, results):
        if res.get("unpaired"):
            lines.append(f"{lab} unpaired: evaluated on other episodes ({res['unpaired']}); "
                         "its differences from the other columns are not paired")
    return "\n".join(lines)


# ---------------------------------------------------------------- the plot

def _panel_of(family: str) -> str:
    return "domain_shift" if family.startswith("domain_shift:") else family


_XLABELS = {"label_noise": "noise rate (fraction of the support set corrupted)",
            "gaussian_noise": "noise std (pixels in [0, 1]; 0: clean)",
            "corruption": "severity (0: clean)",
            "attack": "eps (× 1/255, L-inf; 0: clean)",
            "certified_l2": "L2 radius (certified accuracy at >= radius)",
            "open_set": "fraction of the queries from unknown classes"}
_TITLES = {"clean": "clean", "label_noise_symmetric": "label noise: symmetric",
           "label_noise_paired": "label noise: paired (c → c+1)",
           "label_noise_outlier": "label noise: outlier images",
           "gaussian_noise": "Gaussian pixel noise", "fgsm": "FGSM (queries)",
           "pgd": "PGD (queries)", "pgd_support": "PGD (support set)",
           "certified_l2": "certified (randomized smoothing)",
           "domain_shift": "domain shift",
           "open_set": "open set (accuracy on the known queries)"}


def _xlabel(panel: str) -> str:
    if panel.startswith("label_noise"):
        return _XLABELS["label_noise"]
    if panel.startswith("corruption:"):
        return _XLABELS["corruption"]
    if panel in ("fgsm", "pgd", "pgd_support"):
        return _XLABELS["attack"]
    return _XLABELS.get(panel, "strength")


def _title(panel: str, rows: Sequence[dict[str, Any]]) -> str:
    title = _TITLES.get(panel) or panel.replace("corruption:", "corruption: ")
    where = {r["setting"].rsplit(", ", 1)[-1] for r in rows}
    if panel in ("gaussian_noise",) or panel.startswith("corruption:"):
        if len(where) == 1:
            title += f" ({where.pop()})"
    return title


def _shots_of(setting: str) -> str:
    return setting.split(",")[0]


_STYLES = ["-", "--", "-.", ":"]


def _panels(results: Sequence[dict[str, Any]]) -> list[str]:
    """One panel per family (all domain shifts in one), in order of appearance."""
    panels: list[str] = []
    for res in results:
        for r in res["rows"]:
            p = _panel_of(r["family"])
            if p != "clean" and p not in panels:
                panels.append(p)
    return panels or ["clean"]


def _plot_shift(ax: Any, targets: list[str], rows: list[dict[str, Any]], i: int, n: int,
                colour: str) -> None:
    """Run ``i`` of ``n``'s domain-shift points, side by side per target."""
    for r in rows:
        x = targets.index(r["family"]) + (i - (n - 1) / 2) * 0.8 / max(n, 1)
        ax.errorbar([x], [r["accuracy"]], yerr=[r["ci95"]], fmt="o", color=colour,
                    capsize=4, ms=6)
    ax.set_xticks(range(len(targets)))
    ax.set_xticklabels([t.split(":", 1)[1].replace("_", "\n") for t in targets], fontsize=8)
    ax.set_xlim(-0.6, len(targets) - 0.4)


def _plot_strengths(ax: Any, panel: str, rows: list[dict[str, Any]],
                    clean: list[dict[str, Any]], shot_settings: list[str], colour: str
                    ) -> float:
    """One run's curves (one line style per shot setting) against strength; returns the
    largest strength drawn."""
    xmax = 0.0
    for j, shots in enumerate(shot_settings):
        sel = sorted((r for r in rows if _shots_of(r["setting"]) == shots), key=effective)
        if not sel:
            continue
        if clean and effective(sel[0]) > 0 and _shots_of(clean[0]["setting"]) == shots \
                and panel != "certified_l2":  # certified at 0 is not the clean accuracy
            # strength 0 is the clean cell itself (the same episodes)
            sel = [{**clean[0], "strength": 0.0, "effective": 0.0}, *sel]
        scale = 255.0 if panel in ("fgsm", "pgd", "pgd_support") else 1.0
        x = [effective(r) * scale for r in sel]
        y = [r["accuracy"] for r in sel]
        lo = [r["accuracy"] - r["ci95"] for r in sel]
        hi = [r["accuracy"] + r["ci95"] for r in sel]
        if len(sel) > 1:
            ax.fill_between(x, lo, hi, color=colour, alpha=0.18, lw=0)
            ax.plot(x, y, color=colour, ls=_STYLES[j % len(_STYLES)], marker="o", ms=4)
        else:  # a lone point: its CI as an error bar
            ax.errorbar(x, y, yerr=[sel[0]["ci95"]], color=colour, marker="o", ms=4,
                        capsize=3, elinewidth=1)
        xmax = max(xmax, *x)
    return xmax


def _plot_panel(ax: Any, panel: str, results: Sequence[dict[str, Any]],
                colours: list[str]) -> None:
    from matplotlib.lines import Line2D

    panel_rows = [r for res in results for r in res["rows"] if _panel_of(r["family"]) == panel]
    shot_settings = list(dict.fromkeys(_shots_of(r["setting"]) for r in panel_rows))
    targets = list(dict.fromkeys(r["family"] for r in panel_rows))
    xmax = 0.0
    for i, res in enumerate(results):
        rows = [r for r in res["rows"] if _panel_of(r["family"]) == panel]
        clean = [r for r in res["rows"] if r["family"] == "clean"]
        if clean:
            ax.axhline(clean[0]["accuracy"], color=colours[i], ls=":", lw=1.2)
        if panel == "domain_shift":
            _plot_shift(ax, targets, rows, i, len(results), colours[i])
        else:
            xmax = max(xmax, _plot_strengths(ax, panel, rows, clean, shot_settings,
                                             colours[i]))
    ways = {int(res["ways"]) for res in results if res.get("ways")}
    if len(ways) == 1:
        ax.axhline(1 / ways.pop(), color="0.55", ls="-.", lw=0.9)
    if panel != "domain_shift":
        xmax = xmax or 1.0
        ax.set_xlim(-0.06 * xmax, 1.06 * xmax)  # from strength 0 (clean) up
        ax.set_xlabel(_xlabel(panel), fontsize=9)
        if len(shot_settings) > 1:
            ax.legend([Line2D([], [], color="0.2", ls=_STYLES[j % len(_STYLES)])
                       for j in range(len(shot_settings))], shot_settings,
                      fontsize=7.5, loc="best", framealpha=0.8)
    ax.set_title(_title(panel, panel_rows), fontsize=10)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)


def run_colours(n: int) -> list[Any]:
    """One colour per run: matplotlib's ten default colours, or the twenty of ``tab20``
    (repeating after 20) when there are more than ten runs, so no two runs share one."""
    if n <= 10:
        return [f"C{i}" for i in range(n)]
    from matplotlib import colormaps

    # dark shades first, then the light ones: the first ten stay the most distinct
    palette = [colormaps["tab20"](i) for i in range(20)]
    ordered = list(palette[0::2]) + list(palette[1::2])
    return [ordered[i % 20] for i in range(n)]


def plot_results(results: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write the PNG of one or more results (one colour per run)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    colours = run_colours(len(results))
    panels = _panels(results)
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    height = 3.3 * nrows + 0.8
    fig = Figure(figsize=(4.2 * ncols, height), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        _plot_panel(ax, panel, results, colours)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (95% CI band)", fontsize=9)
    handles = [Line2D([], [], color=c, lw=2, marker="o", ms=4) for c in colours]
    names = list(_labels(results))
    handles += [Line2D([], [], color="0.3", ls=":", lw=1.2),
                Line2D([], [], color="0.55", ls="-.", lw=0.9)]
    names += ["clean accuracy (run's colour)", "chance"]
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 6), fontsize=9,
               frameon=False)
    first = results[0]
    fig.suptitle(f"Robustness: {first.get('ways')}-way {first.get('shots')}-shot, "
                 f"mean query accuracy over {first.get('episodes')} episodes per cell",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.35 / height, 1, 1 - 0.3 / height))
    out = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    replace_file(out, buf.getvalue())
    return out


def write_report(result: dict[str, Any], out_dir: str | os.PathLike,
                 compare: Sequence[dict[str, Any]] = ()) -> dict[str, str]:
    """Write ``robustness.json``, ``.csv`` (``result``'s rows) and ``.png`` (``result`` and
    the ``compare`` results) into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {ext: out / f"robustness.{ext}" for ext in ("json", "csv", "png")}
    replace_file(paths["json"], (json.dumps(result, indent=1) + "\n").encode())
    replace_file(paths["csv"], _csv_bytes(result["rows"]))
    plot_results([result, *compare], paths["png"])
    return {k: str(v) for k, v in paths.items()}
