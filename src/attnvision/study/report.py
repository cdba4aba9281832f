"""A study's report from its folder (``results.collect``): ``report.html`` (one self-contained
file: inline CSS, inline JavaScript for sorting, plots as inline SVG, the gallery as a data URI;
no network access, no external URL), ``report.md``, ``results.csv`` (one row per run and one per
configuration) and ``plots/*.png`` + ``*.svg``; plus the summary table printed to the terminal.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from pathlib import Path

from ..explain.figures import pyplot
from ..profile import MACS_CONVENTION

GALLERY = "gallery.png"


# ---- number formatting ------------------------------------------------------------------------

def num(value, digits: int = 2, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}{suffix}"


def pm(mean, std, digits: int = 2) -> str:
    return num(mean, digits) + ("" if std is None else f" ± {std:.{digits}f}")


def p_value(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.0e}"


def verdict(row: dict) -> str:
    paired = row.get("paired")
    if row["baseline"]:
        return "baseline"
    if not paired:
        return "–"
    ci = paired["ci"]
    if ci["low"] > 0:
        return "better"
    if ci["high"] < 0:
        return "worse"
    return "not resolved"


def median_of(row: dict, key: str):
    value = row.get(key)
    return value["median"] if isinstance(value, dict) else None


# ---- tables (header, rows of (text, sort value)) ------------------------------------------------

def main_table(data: dict) -> tuple[list[str], list[list[tuple[str, object]]]]:
    rows = data["configurations"]
    metric = next((r["metric"] for r in rows if "metric" in r), "acc")
    multilabel = any("test_CF1" in r for r in rows)
    header = ["configuration", "n", f"test {metric} (%)"] + (["test CF1 (%)", "test OF1 (%)"] if multilabel else []) + \
        ["Δ (pp)", "95% CI of Δ", "verdict", "McNemar p per seed", "resolvable (pp)", "params", "MMACs",
         "latency b1 (ms)", "latency b32 (ms)", "train step ×", "epoch (s)", "train memory (MB)"]
    body = []
    for r in rows:
        paired, ci = r.get("paired"), (r.get("paired") or {}).get("ci")
        ps = ", ".join(p_value(s["p"]) for s in (paired or {}).get("per_seed", {}).values())
        lat1, lat32 = r.get("latency_ms_b1"), r.get("latency_ms_b32")
        memory = r.get("memory_bytes", {}).get("peak")
        body.append([
            (r["configuration"] + (" (baseline)" if r["baseline"] else ""), r["configuration"]),
            (f"{r['n']}/{r['seeds_planned']}", r["n"]),
            (pm(r.get("test_mean"), r.get("test_std")), r.get("test_mean")),
            *([(num(r.get(k)), r.get(k)) for k in ("test_CF1", "test_OF1")] if multilabel else []),
            (num(r.get("delta"), 2, "") if "delta" in r else "–", r.get("delta")),
            (f"[{ci['low']:+.2f}, {ci['high']:+.2f}]" if ci else "–", ci["low"] if ci else None),
            (verdict(r), verdict(r)),
            (ps or "–", min((s["p"] for s in (paired or {}).get("per_seed", {}).values()), default=None)),
            (num((paired or {}).get("resolvable")), (paired or {}).get("resolvable")),
            (f"{r['params']:,}" if "params" in r else "–", r.get("params")),
            (num(r["macs"] / 1e6 if "macs" in r else None), r.get("macs")),
            (f"{lat1['median']:.2f} ({lat1['q1']:.2f}–{lat1['q3']:.2f})" if lat1 else "–", median_of(r, "latency_ms_b1")),
            (f"{lat32['median']:.1f} ({lat32['q1']:.1f}–{lat32['q3']:.1f})" if lat32 else "–",
             median_of(r, "latency_ms_b32")),
            (num(median_of(r, "train_step_ratio")), median_of(r, "train_step_ratio")),
            (num(r.get("epoch_time_s"), 1), r.get("epoch_time_s")),
            (num(memory / 2**20 if memory else None, 0), memory),
        ])
    return header, body


LOCALIZATION_SCORES = (("pointing_game", "pointing ≤ tol (%)"), ("pointing_game_exact", "pointing 0 px (%)"),
                       ("energy_in_box", "energy in box (%)"),
                       ("relevance_rank", "relevance rank (%)"), ("deletion", "deletion AUC ↓"),
                       ("insertion", "insertion AUC ↑"))


def localization_table(data: dict) -> tuple[list[str], list[list[tuple[str, object]]]]:
    header = ["configuration", "map", "test acc (%)"] + [title for _, title in LOCALIZATION_SCORES]
    body = []
    map_names = {"gradcam": "Grad-CAM", "attention": "own map", "integrated_gradients": "IG", "occlusion": "occlusion"}
    for r in data["localization"]:
        for name, scores in r.get("maps", {}).items():
            body.append([(r["configuration"], r["configuration"]), (map_names.get(name, name), name),
                         (num(r.get("test")), r.get("test"))] +
                        [(num(scores.get(k), 1), scores.get(k)) for k, _ in LOCALIZATION_SCORES])
    reference = (data["explain"] or {}).get("reference") or {}
    for name, scores in reference.items():
        body.append([(f"reference: {name} map", "~" + name), ("–", ""), ("–", None)] +
                    [(num(scores.get(k), 1), scores.get(k)) for k, _ in LOCALIZATION_SCORES])
    return header, body


def runs_table(data: dict) -> tuple[list[str], list[list[tuple[str, object]]]]:
    header = ["part", "run", "status", "best val (%)", "test (%)", "epochs", "train time (s)", "img/s", "threads",
              "command"]
    body = []
    for r in data["runs"]:
        status = r["status"] if r["status"] != "failed" else f"failed: {r['error']}"
        body.append([(r["part"], r["part"]), (r["cell"], r["cell"]), (status, r["status"]),
                     (num(r.get("best_val")), r.get("best_val")), (num(r.get("test")), r.get("test")),
                     (str(r.get("epochs", "–")), r.get("epochs")), (num(r.get("train_time_s"), 0), r.get("train_time_s")),
                     (num(r.get("images_per_s"), 0), r.get("images_per_s")), (str(r.get("threads") or "–"), r.get("threads")),
                     (r["command"], r["command"])])
    return header, body


# ---- plots ------------------------------------------------------------------------------------

def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower cost x, higher score y),
    in order of cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def write_plots(data: dict, folder: Path) -> dict[str, str]:
    """accuracy-vs-latency, accuracy-vs-params (Pareto front marked) and learning curves, as PNG
    and SVG; returns {name: svg text}."""
    plt = pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    rows = [r for r in data["configurations"] if r.get("test_mean") is not None]
    metric = rows[0]["metric"] if rows else "acc"
    svgs = {}

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / f"{name}.png", dpi=120)
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg")
        fig.savefig(folder / f"{name}.svg")
        svgs[name] = buffer.getvalue()[buffer.getvalue().index("<svg"):]
        plt.close(fig)

    for name, key, label in (("accuracy-vs-latency", "latency_ms_b1", "inference latency, batch 1 (ms, median)"),
                             ("accuracy-vs-params", "params", "parameters")):
        usable = [r for r in rows if (median_of(r, key) if key.startswith("latency") else r.get(key)) is not None]
        if not usable:
            continue
        xs = [median_of(r, key) if key.startswith("latency") else r[key] for r in usable]
        ys = [r["test_mean"] for r in usable]
        fig, ax = plt.subplots(figsize=(6, 4.2))
        ax.errorbar(xs, ys, yerr=[r["test_std"] or 0 for r in usable], fmt="o", capsize=3, color="tab:blue")
        front = pareto_front(list(zip(xs, ys)))
        ax.plot([xs[i] for i in front], [ys[i] for i in front], "--", color="tab:red", label="Pareto front")
        for x, y, r in zip(xs, ys, usable):
            ax.annotate(r["configuration"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel(f"test {metric} (%), mean ± std over seeds")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        save(fig, name)
    if data["curves"]:
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        for name, c in data["curves"].items():
            left.plot(c["epoch"], c["val"], marker="o", label=name)
            right.plot(c["epoch"], c["train_loss"], marker="o", label=name)
        left.set(xlabel="epoch", ylabel=f"validation {metric} (%), mean over seeds")
        right.set(xlabel="epoch", ylabel="training loss, mean over seeds")
        for ax in (left, right):
            ax.grid(alpha=0.3)
        left.legend(fontsize=8)
        save(fig, "learning-curves")
    return svgs


# ---- writers ----------------------------------------------------------------------------------

def write_csv(data: dict, path: Path) -> None:
    keys = ["level", "part", "configuration", "cell", "seed", "status", "n", "metric", "test", "test_std",
            "best_val", "delta", "ci_low", "ci_high", "params", "macs", "latency_ms_b1", "latency_ms_b32",
            "train_step_ratio", "epoch_time_s", "train_time_s", "images_per_s", "memory_bytes", "threads", "command"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for r in data["runs"]:
            writer.writerow({"level": "run", **{k: v for k, v in r.items() if k != "history"}})
        for r in data["configurations"]:
            ci = (r.get("paired") or {}).get("ci") or {}
            writer.writerow({"level": "configuration", "part": "runs", "configuration": r["configuration"], "n": r["n"],
                             "metric": r.get("metric"), "test": r.get("test_mean"), "test_std": r.get("test_std"),
                             "best_val": r.get("val_mean"), "delta": r.get("delta"), "ci_low": ci.get("low"),
                             "ci_high": ci.get("high"), "params": r.get("params"), "macs": r.get("macs"),
                             "latency_ms_b1": median_of(r, "latency_ms_b1"), "latency_ms_b32": median_of(r, "latency_ms_b32"),
                             "train_step_ratio": median_of(r, "train_step_ratio"), "epoch_time_s": r.get("epoch_time_s"),
                             "train_time_s": r.get("train_time_s"), "images_per_s": r.get("images_per_s"),
                             "memory_bytes": r.get("memory_bytes", {}).get("peak"), "threads": r.get("threads")})


def markdown_table(header: list[str], body: list[list[tuple[str, object]]]) -> str:
    cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(text) for text, _ in row) + " |" for row in body]
    return "\n".join(lines)


def notes(data: dict) -> dict[str, str]:
    """The paragraphs that state conventions, shared by the HTML and Markdown reports."""
    study, costs, explain = data["study"], data["cost_settings"], data["explain"]
    recipe = ", ".join(f"{k}={v}" for k, v in study.recipe.items())
    k = max(1, len(study.configurations()) - 1)
    out = {
        "design": f"Grid: model {study.model} × attention {[a or 'none' for a in study.attn]} × head "
                  f"{[h or 'own' for h in study.head]}, seeds {study.seed}; recipe: {recipe}. The checkpoint of "
                  "each run is chosen on its validation split; the test split is evaluated once.",
        "statistics": "n: finished seeds of those planned; mean ± sample std over seeds. Δ: mean over common "
                      "seeds of the paired difference to the baseline, in percentage points. 95% CI: paired "
                      "bootstrap over test images of the per-image correctness difference averaged over seeds "
                      "(2,000 resamples; mAP difference for multi-label data, 500). Verdict 'better'/'worse' when "
                      "the CI excludes 0, else 'not resolved'. McNemar: exact two-sided test per seed on the same "
                      f"test images, not corrected for the {k} comparisons with the baseline (a family-wise 5% level needs "
                      f"p < {0.05 / k:.3g} per test, Bonferroni). Resolvable: the difference a "
                      "McNemar test detects with 80% power at α = 0.05 given the discordant images observed "
                      "(2.8·√(b+c)/N, mean over seeds).",
    }
    if costs:
        out["costs"] = (f"Costs measured in one process on {costs['device']} with {costs['threads']} thread(s), "
                        f"configurations interleaved over {costs['rounds']} rounds (torch {costs['torch']}): "
                        f"latency = median (interquartile range) of {costs['rounds'] * costs['repeats']} timed calls "
                        f"per batch size after warm-up; train step × = median over rounds of the per-round ratio of "
                        f"the training-step time (batch {costs['batch_size']}, forward + backward + SGD step) to the "
                        f"baseline's; train memory = saved activations + weights, gradients and momentum at batch "
                        f"{costs['batch_size']}. MACs of one {'×'.join(map(str, costs['input']))} input: "
                        f"{MACS_CONVENTION}. Epoch (s): median wall time of a training epoch in the runs themselves.")
    if explain:
        s = explain["settings"]
        out["localization"] = (f"Each configuration retrained (first seed) on {s['data']} and explained on the first "
                               f"{s['images']} {s['split']} images ({s['pairs']} image-class pairs, the ground-truth "
                               f"class): Grad-CAM at the {s['layer']} and the module's own spatial map where it has "
                               f"one. Pointing game with a {s['tolerance']:g}-pixel tolerance and without, energy in "
                               f"box, relevance rank; deletion/insertion AUC over the first {s['faithfulness_images']} images in "
                               f"{s['steps']} steps. Reference rows: a random map (chance), a centred Gaussian, the "
                               "box itself (upper bound).")
    return out


def environment_rows(data: dict) -> list[tuple[str, str]]:
    env = data["environment"]
    costs = data["cost_settings"] or {}
    threads = sorted({r["threads"] for r in data["runs"] if r.get("threads")})
    return [("command", env.get("command", "–")), ("commit", env.get("commit", "–")),
            ("attnvision", env.get("attnvision", "–")), ("torch", env.get("torch", "–")),
            ("python", env.get("python", "–")), ("device", env.get("device", "–")), ("cpu", env.get("cpu", "–")),
            ("threads per run", ", ".join(map(str, threads)) or "–"),
            ("threads for costs", str(costs.get("threads", "–"))), ("jobs at once", str(env.get("jobs", "–"))),
            ("started", env.get("date", "–")), ("report built", env.get("report_date", "–")),
            ("rebuild a row", "attnvision train --config <run folder>/config.yaml (see the runs table)")]


def write_markdown(data: dict, path: Path, has_gallery: bool) -> None:
    text = [f"# Attention study: {data['study'].recipe.get('data', 'fashion-mnist')}", ""]
    paragraphs = notes(data)
    text += [paragraphs["design"], "", "## Accuracy and cost", "", markdown_table(*main_table(data)), "",
             paragraphs["statistics"], ""]
    if "costs" in paragraphs:
        text += [paragraphs["costs"], ""]
    text += ["![accuracy vs latency](plots/accuracy-vs-latency.png)", "![accuracy vs params](plots/accuracy-vs-params.png)",
             "", "![learning curves](plots/learning-curves.png)", ""]
    if data["localization"]:
        text += ["## Does it look at the object?", "", markdown_table(*localization_table(data)), ""]
        if "localization" in paragraphs:
            text += [paragraphs["localization"], ""]
    if has_gallery:
        text += [f"![gallery](plots/{GALLERY})", ""]
    text += ["## Runs", "", markdown_table(*runs_table(data)), "", "## Environment", "",
             "\n".join(f"- {k}: `{v}`" for k, v in environment_rows(data)), ""]
    path.write_text("\n".join(text))


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1400px;
padding:0 1em;color:#222}h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:0.85em;margin:0.8em 0}th,td{padding:4px 8px;border-bottom:1px solid #eee;
text-align:right;white-space:nowrap}th{background:#f4f4f4;cursor:pointer;user-select:none;position:sticky;top:0}
th:after{content:" \\2195";color:#aaa}th.asc:after{content:" \\2191";color:#222}th.desc:after{content:" \\2193";color:#222}
td:first-child,th:first-child{text-align:left}td.text{text-align:left}tr.baseline{background:#fffbe6}
.better{color:#0a7a2f;font-weight:600}.worse{color:#b00020;font-weight:600}.note{color:#555;max-width:75em;font-size:0.9em}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots svg{max-width:100%;height:auto}img.gallery{max-width:100%}
.failed{color:#b00020}code{background:#f4f4f4;padding:1px 4px}.scroll{overflow-x:auto}
"""

SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, col){
    th.addEventListener('click', function(){
      var asc = !th.classList.contains('asc');
      table.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
      th.classList.add(asc ? 'asc' : 'desc');
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      rows.sort(function(a, b){
        var x = a.cells[col].dataset.sort, y = b.cells[col].dataset.sort;
        var nx = parseFloat(x), ny = parseFloat(y);
        var bothNumbers = !isNaN(nx) && !isNaN(ny);
        if (x === '' && y !== '') return 1;
        if (y === '' && x !== '') return -1;
        var c = bothNumbers ? nx - ny : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"""


def html_table(table_id: str, header: list[str], body: list[list[tuple[str, object]]],
               row_class=lambda row: "") -> str:
    def sort_value(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        return html.escape(str(value), quote=True)

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = []
    for row in body:
        cells = []
        for text, value in row:
            cls = {"better": ' class="better"', "worse": ' class="worse"'}.get(text, "")
            if cls == "" and text.startswith("failed"):
                cls = ' class="failed text"'
            elif cls == "" and not isinstance(value, (int, float)) and value is not None:
                cls = ' class="text"'
            cells.append(f'<td data-sort="{sort_value(value)}"{cls}>{html.escape(text)}</td>')
        rows.append(f'<tr class="{row_class(row)}">{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table id="{table_id}" class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def write_html(data: dict, path: Path, svgs: dict[str, str], gallery: Path | None) -> None:
    paragraphs = notes(data)
    title = f"Attention study: {data['study'].recipe.get('data', 'fashion-mnist')}"
    header, body = main_table(data)
    parts = [f"<h1>{html.escape(title)}</h1>", f'<p class="note">{html.escape(paragraphs["design"])}</p>',
             "<h2>Accuracy and cost</h2>",
             html_table("results", header, body, lambda row: "baseline" if "(baseline)" in row[0][0] else ""),
             f'<p class="note">{html.escape(paragraphs["statistics"])}</p>']
    if "costs" in paragraphs:
        parts.append(f'<p class="note">{html.escape(paragraphs["costs"])}</p>')
    parts.append('<div class="plots" id="plots">' + "".join(
        f'<figure id="plot-{name}">{svg}</figure>' for name, svg in svgs.items()) + "</div>")
    if data["localization"]:
        parts += ["<h2>Does it look at the object?</h2>", html_table("localization", *localization_table(data))]
        if "localization" in paragraphs:
            parts.append(f'<p class="note">{html.escape(paragraphs["localization"])}</p>')
    if gallery is not None:
        encoded = base64.b64encode(gallery.read_bytes()).decode()
        parts += ["<h2>The same test images, every configuration</h2>",
                  f'<img id="gallery" class="gallery" alt="explanation gallery" src="data:image/png;base64,{encoded}">',
                  '<p class="note">Top row: the images with their object boxes (green); below, each configuration\'s '
                  "Grad-CAM and, where it has one, its own spatial attention map (min-max scaled per map; a white cross "
                  "marks the maximum).</p>"]
    failed = [r for r in data["runs"] if r["status"] == "failed"]
    if failed:
        parts += ["<h2>Failed runs</h2><ul>"] + [f'<li class="failed">{html.escape(r["part"] + "/" + r["cell"])}: '
                                                 f'{html.escape(r["error"])} (log: {html.escape(r["folder"])}/train.log)</li>'
                                                 for r in failed] + ["</ul>"]
    parts += ["<h2>Runs</h2>", html_table("runs", *runs_table(data)), "<h2>Environment</h2><table id=\"environment\">"]
    parts += [f'<tr><td>{html.escape(k)}</td><td class="text"><code>{html.escape(v)}</code></td></tr>'
              for k, v in environment_rows(data)]
    parts.append("</table>")
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
            f'<body>{"".join(parts)}<script>{SCRIPT}</script></body></html>')
    path.write_text(page)


def summary_table(data: dict):
    """The terminal summary: one row per configuration (the former demo table, over seeds)."""
    from rich.table import Table

    rows = data["configurations"]
    metric = next((r["metric"] for r in rows if "metric" in r), "acc")
    table = Table(title=f"{', '.join(data['study'].model)} on {data['study'].recipe.get('data', 'fashion-mnist')}")
    for col in ("configuration", "n", "params", "MMACs", f"best val {metric}", f"test {metric}", "Δ [95% CI]",
                "train step ×", "epoch", "img/s"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for r in rows:
        ci = (r.get("paired") or {}).get("ci")
        table.add_row(r["configuration"], f"{r['n']}/{r['seeds_planned']}",
                      f"{r['params']:,}" if "params" in r else "–", num(r["macs"] / 1e6 if "macs" in r else None),
                      pm(r.get("val_mean"), r.get("val_std")) + "%", pm(r.get("test_mean"), r.get("test_std")) + "%",
                      f"{r['delta']:+.2f} [{ci['low']:+.2f}, {ci['high']:+.2f}]" if ci else "–",
                      num(median_of(r, "train_step_ratio")), num(r.get("epoch_time_s"), 1, " s"),
                      num(r.get("images_per_s"), 0))
    return table


def write_report(data: dict, gallery: Path | None = None) -> Path:
    """Write every report file into the study folder; returns the path of report.html."""
    out = data["out"]
    svgs = write_plots(data, out / "plots")
    write_csv(data, out / "results.csv")
    write_markdown(data, out / "report.md", gallery is not None)
    write_html(data, out / "report.html", svgs, gallery)
    return out / "report.html"
