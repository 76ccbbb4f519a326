"""report.html: one evaluation in one self-contained page a reader can open anywhere (mail it, attach it).

Everything is inline: CSS, the figures as SVG drawn here (no plotting library, no script, no external URL),
the preview as a base64 image. The page shows the arm table, a forest plot of every arm's gain with its CI
between the floor and ceiling controls, per-person gains over every seed, one confusion matrix per arm, the
synthetic store summaries and the preview.

The numbers the figures need beyond report.json (confusion counts, per-person accuracies per seed) ride in the
page as a JSON data block, so `rewrite_html_report` can redraw the page later (e.g. once the demo's preview
exists) from the report folder alone.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from augmenter.errors import UserError
from recognition_eval.loso import sorted_folds
from recognition_eval.metrics import confusion

HTML_NAME = "report.html"
DATA_ID = "report-figure-data"
BASELINE = "baseline"
# What a control arm stands for, by its conventional name; report["arm_roles"] overrides or adds.
ROLE_OF_ARM = {
    "copy-onset": "floor",
    "fresh": "ceiling",
    "oracle": "transfer-ceiling",
    "demo-oracle": "transfer-ceiling",
    "shuffled": "control",
}
ROLE_TEXT = {
    "floor": "floor: no motion",
    "ceiling": "ceiling: more real data",
    "transfer-ceiling": "ceiling: perfect motion transfer",
    "control": "control",
}
ROLE_COLOUR = {"floor": "#7f7f7f", "ceiling": "#2e8b57", "transfer-ceiling": "#3b6fb6", "control": "#b03a3a"}
ARM_COLOUR = "#d9822b"  # arms without a role: the generators under test
REFERENCE_ROLES = ("floor", "ceiling", "transfer-ceiling")  # drawn as vertical lines across the forest plot
MIME = {
    ".gif": "image/gif",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}
OPTIONAL_ARM_COLUMNS = (  # (key, header): shown when any arm carries the key
    ("p_uf1_holm", "p (Holm)"),
    ("synthetic_mode", "synthetic mode"),
    ("real_draws", "real draws"),
    ("synthetic_draws", "synthetic draws"),
    ("domain_mismatch", "domain mismatch"),
)

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px;color:#222;
  background:#fff;max-width:1200px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:3px}
p.meta,p.note{color:#555;font-size:13px;margin:3px 0}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td.name,th.name{text-align:left}
tr.role-floor td.name{border-left:4px solid #7f7f7f}tr.role-ceiling td.name{border-left:4px solid #2e8b57}
tr.role-transfer-ceiling td.name{border-left:4px solid #3b6fb6}
tr.role-control td.name{border-left:4px solid #b03a3a}
span.role{font-size:11px;color:#666;margin-left:6px}span.warn{color:#b03a3a;font-weight:600}
div.grid{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
table.confusion td{width:52px;text-align:center;line-height:1.15}
table.confusion caption{font-weight:600;text-align:left;padding-bottom:3px}
svg text{font-family:inherit}
td.path{text-align:left;white-space:normal;word-break:break-all;max-width:420px}
img.preview{image-rendering:pixelated;border:1px solid #ddd}
"""


def arm_roles(report: dict) -> dict[str, str]:
    """{arm: role} for the arms in the report: the conventional names, then report["arm_roles"] on top."""
    names = list(report.get("arms") or {})
    roles = {name: ROLE_OF_ARM[name] for name in names if name in ROLE_OF_ARM}
    roles.update({str(k): str(v) for k, v in (report.get("arm_roles") or {}).items()})
    return roles


def figure_data(
    report: dict,
    labels: np.ndarray,
    classes: Sequence[str],
    persons: np.ndarray,
    predictions: dict[str, np.ndarray],
) -> dict:
    """What the figures need beyond report.json: per arm the confusion counts summed over seeds, and per arm,
    seed and test person the accuracy (so per-person gains show every seed, not just the first)."""
    labels, persons = np.asarray(labels), np.asarray(persons).astype(str)
    folds = sorted_folds(persons)  # per test PERSON, whatever the folds (a fold may hold several persons)
    masks = [persons == fold for fold in folds]
    n = len(classes)
    return {
        "classes": [str(c) for c in classes],
        "seeds": list(report.get("seeds") or range(len(next(iter(predictions.values()), [])))),
        "folds": folds,
        "n_test": [int(m.sum()) for m in masks],
        "confusion": {
            arm: np.sum([confusion(labels, p, n) for p in per_seed], axis=0).astype(int).tolist()
            for arm, per_seed in predictions.items()
        },
        "fold_accuracy": {
            arm: [[float(np.mean(p[m] == labels[m])) if m.any() else None for m in masks] for p in per_seed]
            for arm, per_seed in predictions.items()
        },
    }


def write_html_report(
    out: str | Path,
    report: dict,
    labels: np.ndarray,
    classes: Sequence[str],
    persons: np.ndarray,
    predictions: dict[str, np.ndarray],
    preview: str | Path | None = None,
) -> Path:
    """Write `out`/report.html from the report and the pooled predictions ((S, N) per arm); returns it."""
    return _write(Path(out), report, figure_data(report, labels, classes, persons, predictions), preview)


def rewrite_html_report(out: str | Path, preview: str | Path | None = None) -> Path:
    """Redraw `out`/report.html from `out`/report.json and the data block of the page already there, now with
    `preview` (a GIF/PNG) embedded: for a preview made after the evaluation."""
    out = Path(out)
    page, document = out / HTML_NAME, out / "report.json"
    if not page.is_file() or not document.is_file():
        raise UserError(f"{out}: no {HTML_NAME} and report.json to redraw; run `augmenter evaluate` first")
    match = re.search(
        rf'<script type="application/json" id="{DATA_ID}">(.*?)</script>', page.read_text(), re.DOTALL
    )
    if match is None:
        raise UserError(
            f"{page}: no figure data in the page (written by another version); re-run the evaluation"
        )
    return _write(out, json.loads(document.read_text()), json.loads(match.group(1)), preview)


def _write(out: Path, report: dict, data: dict, preview: str | Path | None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    page = render_html(report, data, preview)
    path = out / HTML_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


def render_html(report: dict, data: dict, preview: str | Path | None = None) -> str:
    """The whole page as a string."""
    roles = arm_roles(report)
    arms = report.get("arms") or {}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(_title(report))}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(_title(report))}</h1>",
        *(f'<p class="meta">{_e(line)}</p>' for line in _meta_lines(report)),
        "<h2>Arms</h2>",
        _arm_table(arms, roles),
        *(f'<p class="note">{_e(line)}</p>' for line in _notes(report)),
    ]
    gains = [name for name in arms if name != BASELINE]
    if gains:
        parts += [
            "<h2>Gain over the baseline, 95 % CI</h2>",
            '<p class="note">Each arm minus the baseline on the same persons, seeds and step budget; bars '
            f"are the {_e(report.get('resampled', 'persons'))} bootstrap interval. Dashed lines: the "
            "controls' gains (floor = no motion, ceiling = more real data, transfer ceiling = perfect "
            "motion).</p>",
            _forest(arms, roles, "uf1", "UF1"),
        ]
        if all("gain_uar" in arms[name] for name in gains):
            parts.append(_forest(arms, roles, "uar", "UAR"))
    parts += _per_person_section(data, roles)
    parts += _confusion_section(data)
    parts += _store_section(report)
    parts += _preview_section(preview)
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    parts.append(f'<script type="application/json" id="{DATA_ID}">{blob}</script>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- text


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _title(report: dict) -> str:
    recognizer, protocol = (report.get(k, "") for k in ("recognizer", "protocol"))
    folding = report.get("folding") or "one person per fold"
    return f"{recognizer} · {protocol} · by person ({folding})"


def _meta_lines(report: dict) -> list[str]:
    lines = [
        f"{report.get('n_persons', report.get('n_folds', '?'))} persons in "
        f"{report.get('n_folds', '?')} folds · "
        f"{report.get('n_samples', '?')} clips · {report.get('n_seeds', '?')} seeds "
        f"{report.get('seeds', '')} · CI over {report.get('resampled', '?')}"
    ]
    test = report.get("test") or {}
    if test:
        lines.append(f"CI: {test.get('bootstrap', '')}; p: {test.get('permutation', '')}")
    if report.get("class_counts"):
        lines.append("classes: " + ", ".join(f"{k} {v}" for k, v in report["class_counts"].items()))
    budget = report.get("budget") or {}
    if budget:
        lines.append(
            "budget: " + ", ".join(f"{k} {v}" for k, v in budget.items() if not isinstance(v, (dict, list)))
        )
    seconds = report.get("seconds") or {}
    if seconds:
        lines.append("seconds: " + ", ".join(f"{k} {v}" for k, v in seconds.items()))
    return lines


def _notes(report: dict) -> list[str]:
    notes = []
    features = report.get("features") or {}
    if report.get("n_unlabelled_dropped"):
        notes.append(f"{report['n_unlabelled_dropped']} manifest rows without a class dropped")
    if features.get("apex_estimated"):
        notes.append(f"{features['apex_estimated']} clips with an estimated (middle-frame) apex")
    for failed in features.get("failed") or []:
        notes.append(f"left out: {failed.get('clip')} ({failed.get('reason')})")
    per_dataset = report.get("per_dataset") or {}
    if len(per_dataset) > 1:
        for name, scores in per_dataset.items():
            parts = ", ".join(f"{arm} {value.get('uf1', float('nan')):.3f}" for arm, value in scores.items())
            notes.append(f"{name} UF1: {parts}")
    return notes


def _num(value: object, pattern: str = "{:.3f}") -> str:
    if value is None or isinstance(value, bool):
        return "—" if value is None else ("yes" if value else "no")
    if isinstance(value, (int, np.integer)) and "{}" not in pattern:
        return str(value)  # counts (draws, clips) stay whole numbers
    if isinstance(value, (int, float, np.integer, np.floating)):
        return "—" if isinstance(value, float) and math.isnan(value) else pattern.format(value)
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, separators=(", ", ": "), default=str)
    return str(value)


def _interval(arm: dict, metric: str) -> str:
    gain, ci = arm.get(f"gain_{metric}"), arm.get(f"ci_{metric}")
    if gain is None:
        return "—"
    if not ci or len(ci) != 2:
        return f"{gain:+.3f}"
    return f"{gain:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def _arm_table(arms: dict, roles: dict[str, str]) -> str:
    extra = [(key, header) for key, header in OPTIONAL_ARM_COLUMNS if any(key in a for a in arms.values())]
    headers = ["arm", "UF1", "UAR", "gain UF1 [95% CI]", "p"]
    headers += [h for k, h in extra if k == "p_uf1_holm"]
    headers += ["gain UAR [95% CI]", "steps", "real:synthetic", "n_synthetic", "final loss"]
    headers += [h for k, h in extra if k != "p_uf1_holm"]
    rows = ['<table class="arms"><thead><tr>']
    rows += [f'<th class="{"name" if h == "arm" else ""}">{_e(h)}</th>' for h in headers]
    rows.append("</tr></thead><tbody>")
    for name, arm in arms.items():
        base = name == BASELINE
        role = roles.get(name)
        tag = f'<span class="role">{_e(ROLE_TEXT.get(role, role))}</span>' if role else ""
        if arm.get("domain_mismatch"):
            tag += (
                ' <span class="warn" title="the synthetic clips differ in domain from the real ones">⚠</span>'
            )
        ratio = str(arm.get("ratio", "—")).split()[-1]
        cells = [f"{_e(name)}{tag}", _num(arm.get("uf1")), _num(arm.get("uar"))]
        cells += ["—" if base else _interval(arm, "uf1"), "—" if base else _num(arm.get("p_uf1"))]
        cells += ["—" if base else _num(arm.get(k)) for k, _ in extra if k == "p_uf1_holm"]
        cells += ["—" if base else _interval(arm, "uar"), _num(arm.get("steps"), "{}"), _e(ratio)]
        cells += [_num(arm.get("n_synthetic"), "{}"), _num(arm.get("final_loss"))]
        cells += [_e(_num(arm.get(k))) for k, _ in extra if k != "p_uf1_holm"]
        rows.append(f'<tr class="arm-row role-{_e(role or "none")}" data-arm="{_e(name)}">')
        rows.append(f'<td class="name">{cells[0]}</td>' + "".join(f"<td>{c}</td>" for c in cells[1:]))
        rows.append("</tr>")
    rows.append("</tbody></table>")
    return "".join(rows)


# ---------------------------------------------------------------- SVG figures


def _ticks(low: float, high: float, target: int = 6) -> list[float]:
    span = max(high - low, 1e-9)
    step = next(
        (s for s in (0.005, 0.01, 0.02, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0) if span / s <= target), 1.0
    )
    first = math.ceil(low / step - 1e-9) * step
    return [round(first + k * step, 6) for k in range(int((high - first) / step + 1e-9) + 1)]


def _colour(name: str, roles: dict[str, str]) -> str:
    return ROLE_COLOUR.get(roles.get(name, ""), ARM_COLOUR)


def _forest(arms: dict, roles: dict[str, str], metric: str, label: str) -> str:
    """One row per arm: its gain (dot) and 95 % CI (bar), a zero line, the controls' gains as dashed lines."""
    names = [n for n in arms if n != BASELINE and arms[n].get(f"gain_{metric}") is not None]
    if not names:
        return ""
    values = [arms[n][f"gain_{metric}"] for n in names]
    bounds = [v for n in names for v in (arms[n].get(f"ci_{metric}") or [])] + values + [0.0]
    low, high = min(bounds), max(bounds)
    pad = max(0.1 * (high - low), 0.01)
    low, high = low - pad, high + pad
    references = [n for n in names if roles.get(n) in REFERENCE_ROLES]
    # One label line per reference above the plot, so close gains do not print their labels on each other.
    left, plot, right, row, top = 230, 420, 250, 26, 26 + 12 * max(1, len(references))
    width, height = left + plot + right, top + row * len(names) + 34

    def x(value: float) -> float:
        return left + (value - low) / (high - low) * plot

    out = [
        f'<svg class="forest" data-metric="{metric}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="gain in {label} per arm">',
        f'<text x="{left}" y="14" font-size="13" font-weight="600">gain in {_e(label)} over the baseline'
        "</text>",
    ]
    bottom = top + row * len(names)
    for tick in _ticks(low, high):
        out.append(
            f'<line class="grid" x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{top - 6}" y2="{bottom}" '
            'stroke="#eee"/>'
            f'<text x="{x(tick):.1f}" y="{bottom + 16}" font-size="11" text-anchor="middle">'
            f"{tick:+.3g}</text>"
        )
    out.append(
        f'<line class="zero-line" x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{top - 10}" y2="{bottom}" '
        'stroke="#222" stroke-width="1.2"/>'
    )
    for k, name in enumerate(references):
        role, at = roles[name], x(arms[name][f"gain_{metric}"])
        line_y = top - 4 - 12 * (len(references) - 1 - k)
        out.append(
            f'<line class="role-line" data-role="{role}" data-arm="{_e(name)}" x1="{at:.1f}" '
            f'x2="{at:.1f}" y1="{line_y - 8}" y2="{bottom}" stroke="{ROLE_COLOUR[role]}" '
            'stroke-dasharray="4 3"/>'
            f'<text x="{at + 3:.1f}" y="{line_y - 1}" font-size="10" fill="{ROLE_COLOUR[role]}">'
            f"{_e(role.replace('-', ' '))}: {_e(name)}</text>"
        )
    for k, name in enumerate(names):
        arm, y = arms[name], top + row * k + row / 2
        gain, ci = arm[f"gain_{metric}"], arm.get(f"ci_{metric}") or [arm[f"gain_{metric}"]] * 2
        colour, role = _colour(name, roles), roles.get(name)
        p = arm.get(f"p_{metric}")
        text = _interval(arm, metric) + (f"  p {p:.3f}" if p is not None else "")
        out.append(
            f'<g class="forest-arm" data-arm="{_e(name)}" data-gain="{gain:.6f}">'
            f"<title>{_e(name)}: {_e(text)}</title>"
            f'<text x="{left - 8}" y="{y + 4:.1f}" font-size="12" text-anchor="end">{_e(name)}'
            + (f' <tspan fill="#777" font-size="10">({_e(role)})</tspan>' if role else "")
            + "</text>"
            f'<line class="ci" x1="{x(ci[0]):.1f}" x2="{x(ci[1]):.1f}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{colour}" stroke-width="2.5"/>'
            f'<circle class="gain" cx="{x(gain):.1f}" cy="{y:.1f}" r="5" fill="{colour}"/>'
            f'<text x="{left + plot + 10}" y="{y + 4:.1f}" font-size="11">{_e(text)}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


def _per_person_section(data: dict, roles: dict[str, str]) -> list[str]:
    """Per arm, per test person: accuracy gain over the baseline, mean over seeds (bar), each seed (dot)."""
    accuracy = data.get("fold_accuracy") or {}
    if BASELINE not in accuracy or len(accuracy) < 2:
        return []
    folds, base = data["folds"], np.array(accuracy[BASELINE], dtype=float)
    gains = {arm: np.array(v, dtype=float) - base for arm, v in accuracy.items() if arm != BASELINE}
    limit = max([0.1] + [float(np.nanmax(np.abs(g))) for g in gains.values() if np.isfinite(g).any()])
    seeds = data.get("seeds") or list(range(len(base)))
    parts = [
        "<h2>Per test person, every seed</h2>",
        '<p class="note">Accuracy on each held-out person: arm minus baseline, seed by seed '
        f"({len(seeds)} seeds {_e(seeds)}); bar = mean over seeds, dots = single seeds; one y scale for "
        "every arm. Below each person: test clips.</p>",
        '<div class="grid">',
    ]
    for arm, gain in gains.items():
        parts.append(_person_svg(arm, gain, folds, data.get("n_test") or [], limit, _colour(arm, roles)))
    parts.append("</div>")
    return parts


def _person_svg(
    arm: str, gain: np.ndarray, folds: list[str], n_test: list[int], limit: float, colour: str
) -> str:
    left, step, top, plot = 44, max(22, min(48, 520 // max(1, len(folds)))), 22, 120
    width, height = left + step * len(folds) + 10, top + plot + 62

    def y(value: float) -> float:
        return top + (limit - value) / (2 * limit) * plot

    out = [
        f'<svg class="per-person" data-arm="{_e(arm)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="per-person gain of {_e(arm)}">',
        f'<text x="{left}" y="14" font-size="12" font-weight="600" fill="{colour}">{_e(arm)}</text>',
    ]
    for tick in (-limit, -limit / 2, 0.0, limit / 2, limit):
        out.append(
            f'<line x1="{left}" x2="{width - 6}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#eee"/>'
            f'<text x="{left - 4}" y="{y(tick) + 4:.1f}" font-size="10" text-anchor="end">{tick:+.2f}</text>'
        )
    out.append(
        f'<line class="zero-line" x1="{left}" x2="{width - 6}" y1="{y(0):.1f}" y2="{y(0):.1f}" '
        'stroke="#222"/>'
    )
    for f, fold in enumerate(folds):
        centre = left + step * f + step / 2
        column = gain[:, f]
        finite = column[np.isfinite(column)]
        mean = float(finite.mean()) if finite.size else 0.0
        fill = "#55a868" if mean >= 0 else "#c44e52"
        seeds_text = ", ".join(f"{v:+.3f}" for v in finite)
        out.append(
            f'<g class="person" data-fold="{_e(fold)}">'
            f"<title>{_e(fold)}: mean {mean:+.3f} (seeds {seeds_text})</title>"
            f'<rect class="person-mean" x="{centre - step * 0.3:.1f}" width="{step * 0.6:.1f}" '
            f'y="{min(y(mean), y(0)):.1f}" height="{abs(y(mean) - y(0)):.1f}" fill="{fill}" opacity="0.55"/>'
        )
        for s, value in enumerate(finite):
            dx = (s - (len(finite) - 1) / 2) * min(5.0, step * 0.5 / max(1, len(finite)))
            out.append(
                f'<circle class="seed-dot" cx="{centre + dx:.1f}" cy="{y(float(value)):.1f}" r="2.6" '
                'fill="#222"/>'
            )
        label = fold if len(fold) <= 12 else "…" + fold[-11:]
        out.append(
            f'<text x="{centre:.1f}" y="{top + plot + 10}" font-size="9" text-anchor="end" '
            f'transform="rotate(-45 {centre:.1f} {top + plot + 10})">{_e(label)}</text>'
        )
        if f < len(n_test):
            out.append(
                f'<text x="{centre:.1f}" y="{height - 3}" font-size="9" text-anchor="middle" fill="#777">'
                f"{n_test[f]}</text>"
            )
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def _confusion_section(data: dict) -> list[str]:
    """One row-normalised matrix per arm (counts summed over seeds; shade = share of the true class)."""
    classes, matrices = data.get("classes") or [], data.get("confusion") or {}
    if not matrices:
        return []
    parts = [
        "<h2>Confusion matrices</h2>",
        '<p class="note">Rows: ground truth, columns: prediction; counts summed over seeds, shade and % '
        "= share of the row.</p>",
        '<div class="grid">',
    ]
    for arm, counts in matrices.items():
        counts = np.asarray(counts, dtype=int)
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        rows = [f'<table class="confusion" data-arm="{_e(arm)}"><caption>{_e(arm)}</caption><tr><th></th>']
        rows += [f"<th>{_e(c)}</th>" for c in classes]
        rows.append("</tr>")
        for i, name in enumerate(classes):
            rows.append(f'<tr><th class="name">{_e(name)}</th>')
            for j in range(len(classes)):
                ink = "#fff" if share[i, j] > 0.6 else "#222"
                rows.append(
                    f'<td style="background:rgba(59,111,182,{share[i, j]:.3f});color:{ink}">'
                    f"{counts[i, j]}<br><small>{share[i, j]:.0%}</small></td>"
                )
            rows.append("</tr>")
        rows.append("</table>")
        parts.append("".join(rows))
    parts.append("</div>")
    return parts


COUNT_ORDER = ("done", "kept", "source_excluded", "quality", "label_changed")


def _store_section(report: dict) -> list[str]:
    """Per arm: what its stores held and what the protocol and the leakage guard let through."""
    arms = {name: arm for name, arm in (report.get("arms") or {}).items() if name != BASELINE}
    if not arms and not (report.get("synthetic") or {}).get("per_store"):
        return []
    parts = ["<h2>Synthetic stores</h2>"]
    counted = [a.get("synthetic") or {} for a in arms.values()]
    keys = [k for k in COUNT_ORDER if any(k in c for c in counted)]
    keys += sorted({k for c in counted for k in c} - set(keys))
    headers = ["arm", *keys, "persons without synthetic", "synthetic per fold", "labels shuffled", "stores"]
    rows = ['<table class="stores"><tr>'] + [f"<th>{_e(h)}</th>" for h in headers] + ["</tr>"]
    for name, arm in arms.items():
        counts = arm.get("synthetic") or {}
        without = arm.get("folds_without_synthetic")
        cells = [_num(counts.get(k), "{}") for k in keys]
        cells += [
            "—" if without is None else f'<span title="{_e(", ".join(without))}">{len(without)}</span>',
            _num(arm.get("n_synthetic_per_fold"), "{:.1f}"),
            _num(arm.get("shuffled_labels")),
        ]
        rows.append(f'<tr class="store-row" data-arm="{_e(name)}"><td class="name">{_e(name)}</td>')
        rows.append("".join(f"<td>{c}</td>" for c in cells))
        rows.append(f'<td class="path">{_stores_text(arm.get("stores"), arm.get("store_sizes"))}</td></tr>')
    rows.append("</table>")
    parts.append("".join(rows))
    per_store = (report.get("synthetic") or {}).get("per_store") or {}
    sizes = report.get("store_sizes") or {}
    if per_store or sizes:
        parts.append('<p class="note">per store (all arms):</p><table class="per-store"><tr><th class="name">'
                     "store</th><th>counts</th><th>size</th></tr>")  # fmt: skip
        for store in list(per_store) + [s for s in sizes if s not in per_store]:
            counts = per_store.get(store) or {}
            text = ", ".join(f"{k} {v}" for k, v in counts.items())
            parts.append(
                f'<tr><td class="path">{_e(store)}</td><td class="name">{_e(text)}</td>'
                f"<td>{_e(_size(sizes.get(store)))}</td></tr>"
            )
        parts.append("</table>")
    return parts


def _size(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(value) < 1024 or unit == "TiB":
                return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
            value /= 1024
    return "—" if value is None else str(value)


def _stores_text(stores: Iterable | None, sizes: object = None) -> str:
    """A store list as lines: plain paths, or {path, size, n_clips} entries (sizes may also come apart)."""
    if not stores:
        return "—"
    sizes = sizes if isinstance(sizes, dict) else {}
    lines = []
    for store in stores:
        if isinstance(store, dict):
            path, extra = store.get("path", "?"), []
            if store.get("n_clips") is not None:
                extra.append(f"{store['n_clips']} clips")
            if store.get("size") is not None:
                extra.append(_size(store["size"]))
        else:
            path, extra = str(store), [_size(sizes[str(store)])] if str(store) in sizes else []
        lines.append(_e(path) + (f" <small>({_e(', '.join(extra))})</small>" if extra else ""))
    return "<br>".join(lines)


def _preview_section(preview: str | Path | None) -> list[str]:
    if preview is None:
        return []
    path = Path(preview)
    if not path.is_file():
        raise UserError(
            f"{path}: preview image not found; write it first (augmenter preview) or leave it out"
        )
    mime = MIME.get(path.suffix.lower())
    if mime is None:
        raise UserError(f"{path}: a preview must be one of {', '.join(MIME)}")
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return [
        "<h2>Preview</h2>",
        f'<p class="note">{_e(path.name)}: source | target | generated; under each clip its onset→frame flow '
        "(hue = direction, brightness = magnitude, scale in the image header).</p>",
        f'<img class="preview" alt="preview of {_e(path.name)}" src="data:{mime};base64,{encoded}">',
    ]
