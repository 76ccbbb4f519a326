"""report.html from a real small evaluation (real stores of three generators, real LOSO), rendered by a real
headless Chromium: the screenshot is a non-blank page of the asked size with the figures drawn, and the DOM
holds a row, a forest entry, per-person seeds and a confusion matrix for every arm."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from test_evaluate import _job

from augmenter.cluster import close_client, get_client
from augmenter.demo.corpus import DemoCorpus
from augmenter.errors import UserError
from augmenter.generate import GenerateJob, generate
from augmenter.preview import preview
from recognition_eval.evaluate import Arm, evaluate
from recognition_eval.html_report import (
    ARM_COLOUR,
    DATA_ID,
    ROLE_COLOUR,
    figure_data,
    render_html,
    rewrite_html_report,
)

WINDOW = (1280, 2600)
CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary (Debian: apt-get install chromium) to render report.html"
)


class _Elements(HTMLParser):
    """Every start tag with its attributes, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.found.append((tag, {k: v or "" for k, v in attrs}))


def _having(text: str, tag: str, cls: str) -> list[dict]:
    parser = _Elements()
    parser.feed(text)
    return [a for t, a in parser.found if t == tag and cls in a.get("class", "").split()]


def _chromium(page: Path, tmp: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp / 'profile'}",
         "--hide-scrollbars", *flags, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def evaluated(
    demo_manifest: tuple[Path, Path], demo_corpus: DemoCorpus, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict, Path]:
    """(report folder, report, preview GIF): a real evaluation of three real stores (landmark-tps as the main
    arm, demo-oracle, copy-onset) and the shuffled control, 2 seeds, on the shared demo corpus."""
    manifest, root = demo_manifest
    folder = tmp_path_factory.mktemp("html-report")
    client = get_client(workers=1, gpus="none", dashboard_address=None)
    stores = {}
    try:
        for kind in ("landmark-tps", "copy-onset", f"demo-oracle:{demo_corpus.root}"):
            name = kind.split(":")[0]
            job = GenerateJob(
                manifest=manifest, root=root, generator=kind, targets=manifest, out=folder / f"{name}.zarr",
                max_per_source=1, limit=8, size=64, batch_size=4, progress=False, identity_quality=False,
                dashboard_address=None,
            )  # fmt: skip
            assert generate(job, client=client).written >= 4
            stores[name] = job.out
    finally:
        close_client(client)
    arms = (Arm("demo-oracle", (stores["demo-oracle"],)), Arm("copy-onset", (stores["copy-onset"],)))
    out = folder / "report"
    job = _job(demo_manifest, out, seeds=(0, 1), epochs=2, synthetic=(stores["landmark-tps"],), arms=arms,
               shuffle_synthetic_labels=True, show_progress=False)  # fmt: skip
    report = evaluate(job)
    gif = preview(stores["landmark-tps"], folder / "preview.gif", n=2)
    return out, report, gif


def test_every_evaluation_writes_a_self_contained_page(evaluated: tuple[Path, dict, Path]) -> None:
    out, report, gif = evaluated
    page = (out / "report.html").read_text()
    assert "http:" not in page and "https:" not in page and "<script src" not in page  # nothing fetched
    assert _having(page, "img", "preview") == []  # the evaluation alone has no preview
    arms = list(report["arms"])
    assert arms == ["baseline", "augmented", "shuffled", "demo-oracle", "copy-onset"]
    assert [a["data-arm"] for a in _having(page, "tr", "arm-row")] == arms
    # The figure data rides along: per arm the confusion counts of both seeds (2 × every clip).
    blob = page.split(f'id="{DATA_ID}">', 1)[1].split("</script>", 1)[0]
    data = json.loads(blob)
    assert set(data["confusion"]) == set(arms)
    assert all(np.sum(m) == 2 * report["n_samples"] for m in data["confusion"].values())
    assert len(data["fold_accuracy"]["baseline"]) == 2 and data["folds"] == report["folds"]
    # The per-person data of the first seed is what report["per_fold"] (and per_fold.png) holds.
    first = [entry["augmented_accuracy"] for entry in report["per_fold"]]
    np.testing.assert_allclose(data["fold_accuracy"]["augmented"][0], first)

    rewritten = rewrite_html_report(out, gif)
    page = rewritten.read_text()
    (image,) = _having(page, "img", "preview")
    assert image["src"].startswith("data:image/gif;base64,") and len(image["src"]) > gif.stat().st_size
    with pytest.raises(UserError, match="no report.html"):
        rewrite_html_report(out / "missing", gif)


@needs_chromium
def test_chromium_renders_table_forest_plot_seeds_and_confusions(
    evaluated: tuple[Path, dict, Path], tmp_path: Path
) -> None:
    out, report, gif = evaluated
    page = rewrite_html_report(out, gif)
    dom = _chromium(page, tmp_path, "--dump-dom").stdout
    arms = list(report["arms"])
    gains = [a for a in arms if a != "baseline"]
    assert [a["data-arm"] for a in _having(dom, "tr", "arm-row")] == arms
    forests = _having(dom, "svg", "forest")
    assert [f["data-metric"] for f in forests] == ["uf1", "uar"]
    assert [g["data-arm"] for g in _having(dom, "g", "forest-arm")] == gains * 2
    assert len(_having(dom, "circle", "gain")) == len(_having(dom, "line", "ci")) == 2 * len(gains)
    assert len(_having(dom, "line", "zero-line")) == 2 + len(
        gains
    )  # two forests, one per-person chart per arm
    roles = {(r["data-arm"], r["data-role"]) for r in _having(dom, "line", "role-line")}
    assert roles == {("demo-oracle", "transfer-ceiling"), ("copy-onset", "floor")}
    assert [s["data-arm"] for s in _having(dom, "svg", "per-person")] == gains
    n_folds, n_seeds = report["n_folds"], report["n_seeds"]
    assert len(_having(dom, "g", "person")) == len(gains) * n_folds
    assert len(_having(dom, "circle", "seed-dot")) == len(gains) * n_folds * n_seeds  # every seed, not one
    assert [t["data-arm"] for t in _having(dom, "table", "confusion")] == arms
    assert [r["data-arm"] for r in _having(dom, "tr", "store-row")] == gains
    assert _having(dom, "img", "preview")[0]["src"].startswith("data:image/gif;base64,")

    shot = tmp_path / "report.png"
    _chromium(page, tmp_path, f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}")
    keep = Path(out) / "report-screenshot.png"  # beside the report, for a person to look at
    shutil.copyfile(shot, keep)
    pixels = iio.imread(shot)[..., :3]
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    ink = (pixels < 200).any(axis=-1)
    assert 0.02 < ink.mean() < 0.9, ink.mean()  # a page, not a blank (or a black) window
    # The SVG marks were painted: the generator arms' orange and the transfer ceiling's blue are on screen.
    for colour in (ARM_COLOUR, ROLE_COLOUR["transfer-ceiling"], ROLE_COLOUR["floor"]):
        rgb = np.array([int(colour[k : k + 2], 16) for k in (1, 3, 5)])
        assert (np.abs(pixels.astype(int) - rgb).max(axis=-1) <= 8).sum() > 30, colour


def _hand_report() -> tuple[dict, dict]:
    """A report dict with the real keys plus the optional per-arm ones, and figure data for 3 persons."""
    arm = {"uf1": 0.6, "uar": 0.62, "gain_uf1": 0.05, "ci_uf1": [-0.01, 0.1], "gain_uar": 0.04,
           "ci_uar": [-0.02, 0.09], "p_uf1": 0.2, "p_uar": 0.3, "steps": 40, "batch": 16, "n_synthetic": 9,
           "ratio": "real:synthetic 8:8", "final_loss": 0.7}  # fmt: skip
    report = {
        "recognizer": "ststnet", "protocol": "3class", "unit": "person", "n_folds": 3, "n_samples": 9,
        "n_seeds": 2, "seeds": [0, 1], "resampled": "persons x seeds", "folds": ["a", "b", "c"],
        "arm_roles": {"more-real": "ceiling"},
        "arms": {
            "baseline": arm | {"gain_uf1": 0.0, "ci_uf1": [0.0, 0.0], "ratio": "real:synthetic 16:0"},
            "fp-fomm": arm | {"stores": [{"path": "s/a.zarr", "size": 3 * 2**20, "n_clips": 12}],
                              "p_uf1_holm": 0.4, "domain_mismatch": True, "synthetic_mode": "mix",
                              "real_draws": 320, "synthetic_draws": 320,
                              "synthetic": {"done": 12, "kept": 10, "source_excluded": 2, "quality": 0}},
            "more-real": arm | {"gain_uf1": 0.12, "ci_uf1": [0.05, 0.2], "stores": ["s/real.zarr"]},
        },
    }  # fmt: skip
    labels, persons = np.array([0, 1, 2] * 3), np.repeat(["a", "b", "c"], 3)
    predictions = {name: np.stack([labels, np.roll(labels, k)]) for k, name in enumerate(report["arms"])}
    return report, figure_data(report, labels, ["negative", "positive", "surprise"], persons, predictions)


def test_optional_arm_keys_are_rendered_and_explicit_roles_win() -> None:
    report, data = _hand_report()
    page = render_html(report, data)
    headers = page.split('<table class="arms">', 1)[1].split("</thead>", 1)[0]
    for header in ("p (Holm)", "synthetic mode", "real draws", "synthetic draws", "domain mismatch"):
        assert f">{header}<" in headers
    row = page.split('data-arm="fp-fomm">', 1)[1].split("</tr>", 1)[0]
    assert "<td>0.400</td>" in row and "<td>mix</td>" in row and "<td>320</td>" in row and "⚠" in row
    assert "s/a.zarr <small>(12 clips, 3.0 MiB)</small>" in page
    assert [(r["data-arm"], r["data-role"]) for r in _having(page, "line", "role-line")] == [
        ("more-real", "ceiling"),
        ("more-real", "ceiling"),
    ]
    # Absent optional keys leave their columns out; a report with no arms but the baseline still renders.
    bare = {k: v for k, v in report.items() if k != "arm_roles"}
    bare["arms"] = {"baseline": report["arms"]["baseline"]}
    page = render_html(bare, {})
    assert "p (Holm)" not in page and _having(page, "svg", "forest") == []
    assert [r["data-arm"] for r in _having(page, "tr", "arm-row")] == ["baseline"]
