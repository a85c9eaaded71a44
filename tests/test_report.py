"""The report built from small fake runs: sections, one source of numbers, privacy, rendering."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecgka.cli import main as cli_main
from ecgka.errors import InputError
from ecgka.report import find_leaks, tripod, write_report
from ecgka.report.render_utils import fmt

sys.path.insert(0, str(Path(__file__).parent))
from report_factory import FAKE_DATE, fake_manifest, make_run  # noqa: E402

SECTIONS = ("glance", "dataset", "results", "clinical", "distributions", "timing", "model-card", "privacy")
TABLES = ("dataset_counts", "exclusions", "shot_regions", "results", "dist_loss_improvement",
          "clinical_thresholds", "clinical_operating_point", "mae_by_range", "bland_altman", "training_time")
FIGURES = ("label_histogram", "distributions", "few_shot_errors", "scatter", "bland_altman", "roc",
           "calibration", "decision_curves", "reliability", "interval_coverage")  # the last two: issue 23


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    manifest = fake_manifest(root / "data")
    runs = [make_run(root, "vanilla", manifest, shrink=0.6, seed=1),
            make_run(root, "vanilla_dist", manifest, method="vanilla", dist_loss=True, shrink=0.2, seed=2,
                     epoch_seconds=(3.0, 2.5))]
    out = root / "out"
    path = write_report(runs, out)
    return {"root": root, "runs": runs, "out": out, "html": path.read_text(), "path": path}


def _texts(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.suffix in {".html", ".md",
                                                                                          ".csv", ".json"}}


def test_every_section_table_and_figure_is_present(built):
    html, out = built["html"], built["out"]
    for sid in SECTIONS:
        assert f'id="{sid}"' in html, sid
    for name in TABLES:
        assert f'data-name="{name}"' in html and (out / "tables" / f"{name}.csv").is_file(), name
    for name in FIGURES:
        assert f'id="f-{name}"' in html and (out / "figures" / f"{name}.png").is_file(), name
    assert html.count("data:image/png;base64,") == len(FIGURES)
    md = (out / "report.md").read_text()
    for heading in ("## Dataset", "## Results by shot region", "## Clinical detection", "## Model card",
                    "### Training time per epoch"):
        assert heading in md
    assert "Vanilla + Dist Loss" in md and "fp0123abcd" in html  # pairing by method + dist_loss, data version


def test_tidy_tables_are_long_snake_case_and_equal_metrics_json(built):
    out = built["out"]
    for name in TABLES:
        tidy = pd.read_csv(out / "tables" / "tidy" / f"{name}.csv")
        assert all(re.fullmatch(r"[a-z][a-z0-9_]*", c) for c in tidy.columns), (name, list(tidy.columns))
    report = json.loads((out / "metrics.json").read_text())
    results = pd.read_csv(out / "tables" / "tidy" / "results.csv", float_precision="round_trip")
    assert list(results.columns) == ["method", "metric", "shot_group", "value"]
    assert len(results) == 2 * (1 + 8)  # two runs x (n + MAE and GM of four groups)
    for run in report["runs"].values():
        reg = run["metrics"]["regression"]
        mine = results[results["method"] == run["display_name"]].set_index(["metric", "shot_group"])["value"]
        for metric in ("mae", "gm"):
            for group in ("all", "many", "median", "few"):
                assert mine[(metric, group)] == reg[group][metric]
    regions = pd.read_csv(out / "tables" / "tidy" / "shot_regions.csv")
    dataset = next(iter(report["datasets"].values()))
    for group, bins in dataset["shot_groups"].items():
        rows = regions[regions["shot_group"] == group]
        assert rows["bin"].tolist() == sorted(bins)
        assert rows["train_count"].tolist() == [dataset["train_bin_counts"]["counts"][b] for b in sorted(bins)]
    assert regions["bin_centre"].min() >= 1.5
    ranges = pd.read_csv(out / "tables" / "tidy" / "mae_by_range.csv")
    assert {"method", "metric", "k_range", "value"} == set(ranges.columns) and set(ranges["metric"]) == {"mae", "n"}


def test_self_contained_no_network_resources(built):
    html = built["html"]
    assert not re.search(r'src\s*=\s*"(?!data:)', html)
    # the only link out of the page is its TRIPOD+AI appendix, a sibling file written with it
    outward = re.findall(r'href\s*=\s*"(?!data:|#)([^"]*)"', html)
    assert outward == [tripod.HTML_NAME] and (built["out"] / tripod.HTML_NAME).is_file()
    assert "<script" not in html and "http://" not in html and "https://" not in html


def test_table_numbers_equal_metrics_json(built):
    out = built["out"]
    report = json.loads((out / "metrics.json").read_text())
    for run_dir in built["runs"]:  # the report's metrics.json is the runs' metrics.json (less figures, dataset,
        own = json.loads((run_dir / "eval" / "test" / "metrics.json").read_text())  # uncertainty: issue 23)
        assert report["runs"][run_dir.name]["metrics"] == {k: v for k, v in own.items()
                                                          if k not in ("figures", "dataset", "uncertainty")}
        assert report["datasets"][report["runs"][run_dir.name]["dataset_fingerprint"]] == own["dataset"]
    # CSV floats read back exactly (round_trip) and compared within 1e-12 relative: robust to how numpy or
    # pandas prints a float (shortest repr or 17 digits), never to a rounded or wrong number
    results = pd.read_csv(out / "tables" / "results.csv", float_precision="round_trip")
    html_rows = _html_table(built["html"], "results")
    for i, (name, run) in enumerate(report["runs"].items()):
        reg = run["metrics"]["regression"]
        assert results.loc[i, "method"] == run["display_name"]
        for metric in ("mae", "gm"):
            for group in ("all", "many", "median", "few"):
                value = reg[group][metric]
                assert results.loc[i, f"{metric.upper()} {group}"] == pytest.approx(value, rel=1e-12), (
                    name, metric, group)
                assert fmt(value) in html_rows[i]
    clin = pd.read_csv(out / "tables" / "clinical_thresholds.csv", float_precision="round_trip")
    first = next(iter(report["runs"].values()))["metrics"]["clinical"]["conditions"]["hyper"]
    assert len(clin) == len(report["runs"])  # one row per method, the conditions as columns
    row = clin[clin["method"] == "Vanilla"].iloc[0]
    assert [row["AUROC hyper"], row["CI lower hyper"], row["CI upper hyper"]] == pytest.approx(
        [first["auroc"], first["auroc_ci"]["lower"], first["auroc_ci"]["upper"]], rel=1e-12)
    assert row["sensitivity hyper"] == pytest.approx(first["at_threshold"]["sensitivity"], rel=1e-12)
    tidy = pd.read_csv(out / "tables" / "tidy" / "clinical_thresholds.csv", float_precision="round_trip")
    assert {"method", "condition", "definition", "metric", "value"} <= set(tidy.columns)  # long, as before
    hit = tidy[(tidy["method"] == "Vanilla") & (tidy["condition"] == "Hyperkalaemia") & (tidy["metric"] == "auroc")]
    assert float(hit["value"].iloc[0]) == pytest.approx(first["auroc"], rel=1e-12)
    timing = pd.read_csv(out / "tables" / "training_time.csv")
    assert timing["seconds per epoch"].tolist() == pytest.approx([np.mean([12.5, 11.0, 11.5]), 2.75])


def _html_table(html: str, name: str) -> list[str]:
    body = re.search(rf'<table data-name="{name}">(.*?)</table>', html, re.S).group(1)
    return [re.sub(r"<[^>]+>", "|", r) for r in re.findall(r"<tr>(.*?)</tr>", body.split("<tbody>")[1], re.S)]


def test_improvement_of_dist_loss_is_marked(built):
    html = built["html"]
    improvement = pd.read_csv(built["out"] / "tables" / "dist_loss_improvement.csv")
    assert improvement.loc[0, "baseline"] == "Vanilla" and improvement.loc[0, "MAE few"] < 0
    row = _html_table(html, "results")[1]
    assert "Vanilla + Dist Loss" in row
    assert re.search(r'<td class="(best )?better">', html)


def test_no_identifier_or_date_in_any_output(built):
    ids = set()
    for run_dir in built["runs"]:
        for p in run_dir.glob("eval/*/predictions.parquet"):
            ids |= {str(s) for s in pd.read_parquet(p)["subject_id"]}
    assert len(ids) > 50
    for name, text in _texts(built["out"]).items():
        numbers = set(re.findall(r"\d+", text))
        assert not ids & numbers, name
        assert FAKE_DATE not in text and "10:00:00" not in text, name
        assert find_leaks(text, ids) == [], name


def test_privacy_guard_blocks_a_leaking_report(built, tmp_path):
    root = built["root"]
    sid = str(pd.read_parquet(built["runs"][0] / "eval" / "test" / "predictions.parquet")["subject_id"][0])
    leaky = tmp_path / "leaky"
    shutil.copytree(built["runs"][0], leaky)
    run = json.loads((leaky / "run.json").read_text())
    run["display_name"] = f"Vanilla p{sid}"
    (leaky / "run.json").write_text(json.dumps(run))
    with pytest.raises(InputError, match="would publish identifier"):
        write_report([leaky], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert find_leaks(f"ECG of {FAKE_DATE}", set()) == [FAKE_DATE]
    assert find_leaks("taken 03/11/2180 at 10:15:00", set()) == ["03/11/2180", "10:15:00"]
    assert root.exists()


def test_ablation_and_imbalance_tables(tmp_path, built):
    manifest = fake_manifest(tmp_path / "data")
    variant = fake_manifest(tmp_path / "data" / "variants" / "ratio_10", seed=4, n_train=800,
                            variant="ratio_10")
    runs = [make_run(tmp_path, "base", manifest, shrink=0.5, n_boot=50),
            make_run(tmp_path, "abl_l1", manifest, dist_loss=True, shrink=0.3, seed=3, n_boot=50,
                     extra={"group": "ablation_sequence_loss", "ablation": "INV-L1"}),
            make_run(tmp_path, "abl_l2", manifest, dist_loss=True, shrink=0.25, seed=4, n_boot=50,
                     extra={"group": "ablation_sequence_loss", "ablation": "INV-L2"}),
            make_run(tmp_path, "imb_vanilla", variant, shrink=0.6, seed=5, n_boot=50,
                     extra={"dataset_dir": "data/variants/ratio_10"}),
            make_run(tmp_path, "imb_dist", variant, dist_loss=True, shrink=0.2, seed=6, n_boot=50,
                     extra={"dataset_dir": "data/variants/ratio_10"})]
    path = write_report(runs, tmp_path / "out")
    html = path.read_text()
    assert 'data-name="ablation_sequence_loss"' in html and 'id="ablation-loss"' in html
    abl = pd.read_csv(tmp_path / "out" / "tables" / "ablation_sequence_loss.csv")
    assert abl["method"].tolist() == ["Vanilla", "INV-L1", "INV-L2"]  # the main baseline heads the group
    base = json.loads((runs[0] / "eval" / "test" / "metrics.json").read_text())
    assert abl.loc[0, "MAE few"] == base["regression"]["few"]["mae"]
    imb = pd.read_csv(tmp_path / "out" / "tables" / "imbalance_few_mae.csv")
    metrics = json.loads((runs[4] / "eval" / "test" / "metrics.json").read_text())
    assert imb.set_index("method").loc["Vanilla + Dist Loss", "ratio_10"] == metrics["regression"]["few"]["mae"]
    tidy = pd.read_csv(tmp_path / "out" / "tables" / "tidy" / "imbalance_few_mae.csv")
    row = tidy[(tidy["method"] == "Vanilla + Dist Loss") & (tidy["variant"] == "ratio_10")].iloc[0]
    assert (row["metric"], row["shot_group"], row["value"]) == ("mae", "few", metrics["regression"]["few"]["mae"])
    assert 'id="f-imbalance_variants"' in html
    results = pd.read_csv(tmp_path / "out" / "tables" / "results.csv")
    assert results["method"].tolist() == ["Vanilla"]  # grouped runs stay out of the main table


def test_empty_groups_and_one_class_conditions_render_as_missing(tmp_path):
    import warnings

    from ecgka.catalog.info import DatasetInfo
    from ecgka.evaluation import EvalConfig, compute_metrics
    from ecgka.io import atomic_write_json

    manifest = fake_manifest(tmp_path / "data")
    n = 40  # every label 4.1 mmol/L: only the many-shot group, no hypo/hyper case
    df = pd.DataFrame({"sample_id": np.arange(n), "subject_id": 10_000_000 + np.arange(n) // 2,
                       "label": np.full(n, 4.1), "prediction": 4.1 + np.linspace(-0.2, 0.2, n)})
    metrics = compute_metrics(df, df, DatasetInfo.from_dict(manifest), EvalConfig(n_boot=20))
    assert metrics["regression"]["few"] == {"n": 0, "mae": None, "mse": None, "gm": None, "n_labels": 0,
                                            "balanced_mae": None, "balanced_mse": None, "balanced_gm": None}
    assert metrics["clinical"]["conditions"]["hyper"]["auroc"] is None
    run = tmp_path / "run"
    (run / "eval" / "test").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"name": "only", "method": "vanilla"}))
    atomic_write_json(run / "eval" / "test" / "metrics.json", metrics)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_report([run], tmp_path / "out")
    results = pd.read_csv(tmp_path / "out" / "tables" / "results.csv", float_precision="round_trip")
    assert results["MAE few"].isna().all()
    assert results.loc[0, "MAE many"] == pytest.approx(metrics["regression"]["many"]["mae"], rel=1e-12)
    assert "<td class=\"\">–</td>" in (tmp_path / "out" / "report.html").read_text()


def test_cli_report_and_one_line_errors(built, tmp_path, capsys):
    assert cli_main(["report", *map(str, built["runs"]), "--out", str(tmp_path / "r"), "--title", "Demo <run>"]) == 0
    html = (tmp_path / "r" / "report.html").read_text()
    assert "<h1>Demo &lt;run&gt;</h1>" in html and "# Demo <run>" in (tmp_path / "r" / "report.md").read_text()
    assert cli_main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ecgka report: error:") and "run.json" in err and "\n" not in err
    (tmp_path / "unevaluated").mkdir()
    (tmp_path / "unevaluated" / "run.json").write_text("{}")
    assert cli_main(["report", str(tmp_path / "unevaluated"), "--out", str(tmp_path / "r3")]) == 2
    assert "ecgka evaluate" in capsys.readouterr().err


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (`make browser` installs Debian's)")
def test_html_renders_in_headless_chromium(built, tmp_path):
    import matplotlib.pyplot as plt

    png = tmp_path / "shot.png"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1280,2000",
           built["path"].resolve().as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    image = plt.imread(png)
    assert image.shape[:2] == (2000, 1280)
    gray = image[..., :3].mean(axis=2)
    assert gray.var() > 1e-3  # not a blank page
    assert (gray < 0.5).mean() > 0.005  # text and figures drawn in dark ink


def _entry(name, method, dist, ablation, mae):
    from ecgka.report.collect import RunEntry

    reg = {g: {"n": 10, "mae": mae, "gm": mae / 2} for g in ("all", "many", "median", "few")}
    return RunEntry(name=name, display_name=name, method=method, dist_loss=dist, group="ablation_batch_size",
                    ablation=ablation, variant=None, metrics={"regression": reg}, run={})


def test_dist_loss_runs_pair_with_the_baseline_of_the_same_ablation_label():
    from ecgka.report.tables import results_table

    runs = [_entry("v256", "vanilla", False, "B=256", 1.0), _entry("v512", "vanilla", False, "B=512", 0.5),
            _entry("d256", "vanilla", True, "B=256", 0.9), _entry("d512", "vanilla", True, "B=512", 0.6)]
    table = results_table(runs, "abl", "abl")
    assert table.marks[(2, "MAE few")] == "better"  # 0.9 < 1.0 (B=256), not compared with 0.5 (B=512)
    assert table.marks[(3, "MAE few")] == "worse"  # 0.6 > 0.5 (B=512)


def test_the_same_run_twice_is_refused_in_one_line(built, tmp_path, capsys, monkeypatch):
    """Before: two identical rows (one bolded as best) and duplicate keys in the tidy CSVs."""
    run = built["runs"][0]
    with pytest.raises(InputError, match="given twice"):
        write_report([run, run], tmp_path / "twice")
    monkeypatch.chdir(run.parent)
    other_spelling = Path("..") / run.parent.name / run.name  # the same folder, spelt another way
    assert cli_main(["report", run.name, str(other_spelling), "--out", str(tmp_path / "spelt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "given twice" in err and "give each run once" in err
    assert not (tmp_path / "twice").exists() and not (tmp_path / "spelt").exists()
