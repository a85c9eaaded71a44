"""Champion and challenger side by side in ``ecgka report`` (issue 22 section 6): ``--compare`` of two evaluated
runs, a compare stage's folder, the one-line refusals that say what to run, and the main report's long
figure sections folding."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecgka.catalog import ComparisonDir, RunDir
from ecgka.cli import main as cli_main
from ecgka.metrics.bootstrap import cluster_bootstrap_indices
from ecgka.metrics.clinical import MIN_POSITIVES
from ecgka.metrics.paired import PairedPredictions, metric_value, paired_ci
from ecgka.report import html, write_report
from ecgka.report.comparison import TIDY_COLUMNS, dataset_tables
from ecgka.report.figures import Figure

sys.path.insert(0, str(Path(__file__).parent))
from report_factory import FINGERPRINT, fake_manifest, make_run  # noqa: E402

PAPER_ORDER = ["MAE all", "MAE many", "MAE median", "MAE few", "GM all", "GM many", "GM median", "GM few"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A champion and a challenger evaluated on the same test rows (same seed: same sample ids, labels and
    subjects; the challenger's predictions less shrunk), and a run evaluated on other samples."""
    root = tmp_path_factory.mktemp("pair")
    manifest = fake_manifest(root / "data")
    return {"root": root,
            "champion": make_run(root, "champion", manifest, shrink=0.5, seed=1),
            "challenger": make_run(root, "challenger", manifest, dist_loss=True, shrink=0.3, seed=1),
            "other": make_run(root, "other", manifest, shrink=0.3, seed=2)}


def _metrics(run: Path) -> dict:
    return RunDir(run).read_metrics("test")


def _predictions(run: Path) -> pd.DataFrame:
    return pd.read_parquet(RunDir(run).predictions_path("test"))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_pair_page_numbers_equal_a_direct_computation(pair, tmp_path, capsys):
    out = tmp_path / "report"
    assert cli_main(["report", str(pair["champion"]), str(pair["challenger"]), "--compare", "--n-boot", "200",
                     "--seed", "7", "--out", str(out)]) == 0
    tidy = pd.concat([pd.read_csv(out / "tables" / "tidy" / f"{n}.csv")
                      for n in ("comparison_1", "comparison_1_detection")], ignore_index=True)
    assert list(tidy.columns) == list(TIDY_COLUMNS) and set(tidy["dataset"]) == {FINGERPRINT}
    base, cand = _metrics(pair["champion"]), _metrics(pair["challenger"])
    paired = PairedPredictions.from_frames(_predictions(pair["champion"]), _predictions(pair["challenger"]), cand)
    for row in tidy.to_dict("records"):
        if row["metric"].endswith(".auroc") and row["n"] < MIN_POSITIVES:  # "too few", as in the main report
            assert all(pd.isna(row[k]) for k in ("champion", "challenger", "delta", "ci_lower", "ci_upper"))
            continue
        b, c = metric_value(base, row["metric"]), metric_value(cand, row["metric"])
        assert row["champion"] == pytest.approx(b) and row["challenger"] == pytest.approx(c), row["metric"]
        assert row["delta"] == pytest.approx(c - b)
        ci = paired_ci(row["metric"], paired, base, cand, n_boot=200, seed=7)
        assert (row["ci_lower"], row["ci_upper"]) == pytest.approx((ci["lower"], ci["upper"])), row["metric"]
    # the MAE and its paired CI by hand: both models on the same resampled subjects
    a, b = _predictions(pair["champion"]), _predictions(pair["challenger"])
    assert (a["sample_id"] == b["sample_id"]).all()
    err_a, err_b = np.abs(a["prediction"] - a["label"]).to_numpy(), np.abs(b["prediction"] - b["label"]).to_numpy()
    deltas = [err_b[i].mean() - err_a[i].mean() for i in cluster_bootstrap_indices(a["subject_id"], 200, 7)]
    mae = tidy.set_index("metric").loc["regression.all.mae"]
    assert mae["champion"] == pytest.approx(err_a.mean(), rel=1e-5) and mae["n"] == len(a)
    assert (mae["ci_lower"], mae["ci_upper"]) == pytest.approx(tuple(np.quantile(deltas, [0.025, 0.975])), rel=1e-4)
    assert mae["ci_upper"] < 0  # less shrinkage, lower error: the CI excludes 0
    # the page: the main report's look and table layout, paper order and names, no gate
    display = pd.read_csv(out / "tables" / "comparison_1.csv")
    assert list(display["metric"]) == PAPER_ORDER
    assert list(display.columns) == ["metric", "better", "n", "champion", "challenger", "delta", "CI lower",
                                     "CI upper"]
    page = (out / "report.html").read_text()
    assert html.CSS in page and 'data-name="comparison_1"' in page and 'data-name="comparison_1_detection"' in page
    assert '<td class="better">' in page  # the challenger's significant improvements, marked as in the main report
    assert "Gate decision: no gate applied" in page and "gate_rules.csv" not in {p.name for p in out.rglob("*")}
    assert f"champion {pair['champion']}" in page and f"challenger {pair['challenger']}" in page  # both lineages
    assert not re.search(r'(src|href)\s*=\s*"(?!data:|#)', page) and "http" not in page and "<script" not in page
    subjects = {str(s) for s in a["subject_id"]}
    assert not subjects & set(re.findall(r"\d{6,}", page))
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["kind"] == "comparison" and saved["comparison"]["gate"] is None
    assert saved["comparison"]["paired"] == {"n_boot": 200, "seed": 7, "level": 0.95, "unit": "subject", "n": 400}


def test_an_auroc_on_too_few_cases_is_not_shown():
    """Fewer than MIN_POSITIVES cases of the rarer class: no AUROC, delta or CI (as in the main report), the n
    kept and the metric named in the note."""
    rows = [{"dataset": "d", "metric": f"clinical.conditions.{c}.auroc", "higher_is_better": True, "n": n,
             "champion": 0.9, "challenger": 0.8, "delta": -0.1, "delta_ci_lower": -0.2, "delta_ci_upper": 0.0}
            for c, n in (("hyper", MIN_POSITIVES), ("severe_hypo", MIN_POSITIVES - 1))]
    (_, (table,)), = dataset_tables({"rows": rows}).values()
    shown = table.df.set_index("metric")
    assert shown.loc["AUROC hyper", "champion"] == 0.9 and shown.loc["AUROC hyper", "delta"] == -0.1
    assert shown.loc["AUROC severe hypo"][["champion", "challenger", "delta", "CI lower", "CI upper"]].isna().all()
    assert shown.loc["AUROC severe hypo", "n"] == MIN_POSITIVES - 1
    assert pd.isna(table.tidy_df.set_index("metric").loc["clinical.conditions.severe_hypo.auroc", "delta"])
    assert table.texts == {(1, col): "too few" for col in ("champion", "challenger", "delta")}
    assert "Too few" in table.note and "AUROC severe hypo" in table.note and "AUROC hyper," not in table.note


def test_pair_with_a_gate_shows_each_rule_with_its_values(pair, tmp_path):
    gate = tmp_path / "gate.yaml"
    gate.write_text("split: test\nn_boot: 200\nseed: 0\nrules:\n"
                    "  - {metric: regression.few.mae, greater_is_better: false, min_absolute_change: 0.01, "
                    "ci_excludes_loss: true}\n"
                    "  - {metric: clinical.conditions.hyper.auroc, greater_is_better: true, threshold: 0.999}\n")
    out = tmp_path / "report"
    assert cli_main(["report", str(pair["champion"]), str(pair["challenger"]), "--compare", "--gate", str(gate),
                     "--n-boot", "200", "--out", str(out)]) == 0
    rules = pd.read_csv(out / "tables" / "tidy" / "gate_rules.csv")
    base, cand = _metrics(pair["champion"]), _metrics(pair["challenger"])
    assert list(rules["metric"]) == ["regression.few.mae", "clinical.conditions.hyper.auroc"]
    assert list(rules["passed"]) == [True, False]
    for row in rules.to_dict("records"):
        b, c = metric_value(base, row["metric"]), metric_value(cand, row["metric"])
        assert (row["champion"], row["challenger"], row["change"]) == pytest.approx((b, c, c - b))
    assert rules["ci_lower"].iat[0] > 0.01 and np.isnan(rules["ci_lower"].iat[1])  # a CI only where the rule asks
    page = (out / "report.html").read_text()
    assert "Gate decision: refuse: the champion stays" in page and "above" not in rules["reasons"].iat[1]
    assert "below the threshold" in page  # the failed rule's reason


def _comparison_folder(path: Path) -> Path:
    comp = ComparisonDir(path)
    comp.path.mkdir()
    rows = [{"dataset": "data/v2", "fingerprint": "fp2", "split": "test", "metric": m, "higher_is_better": h,
             "champion": b, "challenger": c, "delta": c - b, "delta_ci_lower": lo, "delta_ci_upper": hi}
            for m, h, b, c, lo, hi in (("clinical.conditions.hyper.auroc", True, 0.91, 0.93, -0.01, 0.05),
                                       ("regression.few.mae", False, 0.8, 0.7, -0.15, -0.05),
                                       ("regression.all.mae", False, 0.5, 0.52, 0.001, 0.04))]
    gate = {"promote": False, "failed": ["clinical.conditions.hyper.auroc: too low"], "rules": [
        {"metric": "regression.few.mae", "champion": 0.8, "challenger": 0.7, "change": -0.1, "gain": 0.1,
         "relative_gain": 0.125, "ci": {"lower": 0.05, "upper": 0.15, "level": 0.95}, "n": 120, "passed": True,
         "reasons": []},
        {"metric": "clinical.conditions.hyper.auroc", "champion": 0.91, "challenger": 0.93, "change": 0.02,
         "gain": 0.02, "relative_gain": 0.022, "ci": None, "n": 45, "passed": False,
         "reasons": ["challenger's value 0.93 is below the threshold 0.95"]}]}
    comp.json.write_text(json.dumps({"champion": "v0001", "challenger": "v0002", "datasets": ["data/v2"],
                                     "rows": rows, "gate": gate,
                                     "lineage": ["d2  2026-01-05  exports: labs  data/v2", "d1  2025-11-30  data/v1"]}))
    return comp.path


def test_comparison_folder_page_shows_the_gate_rules_with_their_values(tmp_path):
    out = tmp_path / "report"
    page = write_report([_comparison_folder(tmp_path / "compare")], out).read_text()
    gate_part = page[page.index('id="gate"'):]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", gate_part)
    assert cells[:11] == ["MAE few", "yes", "0.800", "0.700", "-0.100", "0.100", "0.125", "0.050", "0.150", "120", ""]
    assert cells[11:15] == ["AUROC hyper", "no", "0.910", "0.930"] and cells[20:22] == ["45", cells[21]]
    assert "below the threshold 0.95" in cells[21]
    assert "Gate decision: refuse: the champion stays" in page
    # nothing recomputed: comparison.json's numbers, in the paper's order (errors, then detection)
    tidy = pd.read_csv(out / "tables" / "tidy" / "comparison_1.csv")
    assert list(tidy["metric"]) == ["regression.all.mae", "regression.few.mae"]
    assert list(tidy["delta"]) == pytest.approx([0.02, -0.1]) and list(tidy["ci_upper"]) == [0.04, -0.05]
    assert pd.read_csv(out / "tables" / "comparison_1_detection.csv")["metric"].tolist() == ["AUROC hyper"]
    assert '<td class="worse">0.020</td>' in page  # MAE all got worse, its CI excluding 0
    assert "(date)  exports: labs  data/v2" in page and "2026-01-05" not in page  # a build date is no patient's, but
    rules = pd.read_csv(out / "tables" / "tidy" / "gate_rules.csv")  # the page publishes no date
    assert rules["relative_gain"].tolist() == [0.125, 0.022] and rules["n"].tolist() == [120, 45]


def test_mismatched_samples_are_refused_in_one_line_saying_what_to_run(pair, tmp_path, capsys):
    out = tmp_path / "report"
    assert cli_main(["report", str(pair["champion"]), str(pair["other"]), "--compare", "--out", str(out)]) != 0
    err = _one_line_error(capsys)
    assert "not evaluated on the same test samples" in err and f"`ecgka evaluate {pair['other']} --data" in err
    assert f"`ecgka report {pair['champion']} {pair['other']} --compare" in err
    assert not (out / "report.html").exists()


def test_refusals_say_exactly_what_to_run(pair, tmp_path, capsys):
    comp = _comparison_folder(tmp_path / "compare")
    out = str(tmp_path / "report")
    assert cli_main(["report", str(comp), str(pair["champion"]), "--out", out]) != 0
    assert f"`ecgka report {comp} --out DIR`" in _one_line_error(capsys)
    assert cli_main(["report", str(pair["champion"]), "--compare", "--out", out]) != 0
    assert "`ecgka report CHAMPION_RUN CHALLENGER_RUN --compare --out DIR`" in _one_line_error(capsys)
    assert cli_main(["report", str(pair["champion"]), str(pair["challenger"]), "--gate", "default", "--out", out]) != 0
    assert "--compare --gate FILE" in _one_line_error(capsys)
    assert cli_main(["report", str(comp), str(pair["challenger"]), "--compare", "--out", out]) != 0
    assert f"without --compare: `ecgka report {comp} --out DIR`" in _one_line_error(capsys)
    assert cli_main(["report", str(pair["root"] / "data"), "--out", out]) != 0  # a dataset folder, not a run
    assert "`ecgka evaluate RUN --data DIR`" in _one_line_error(capsys)
    ComparisonDir(comp).markdown.write_text("# Champion vs challenger\n")
    ComparisonDir(comp).json.unlink()  # the compare stage stopped before its last file
    assert cli_main(["report", str(comp), "--out", out]) != 0
    assert "--compare --out DIR`" in _one_line_error(capsys)


def test_a_runs_own_evaluation_is_its_evaluation_on_that_dataset(pair, tmp_path):
    """``--dataset FP`` with a run trained on FP: its own evaluation (eval/test/), not a refusal asking for an
    ``--allow-other-dataset`` evaluation that writes to the same eval/test/ (a loop)."""
    path = write_report([pair["champion"], pair["challenger"]], tmp_path / "report", dataset=FINGERPRINT)
    assert path.is_file()
    assert cli_main(["report", str(pair["champion"]), str(pair["challenger"]), "--compare", "--dataset",
                     FINGERPRINT, "--n-boot", "200", "--out", str(tmp_path / "pair")]) == 0


def test_a_section_with_many_figures_folds_the_rest():
    figs = [Figure(f"f{i}", f"Figure {i}", b"\x89PNG", "caption") for i in range(9)]
    items = html.figures_html(figs)
    assert len(items) == html.FIGURES_OPEN + 1 and all(i.startswith("<figure") for i in items[:-1])
    folded = items[-1]
    assert folded.startswith('<details class="figures"><summary>3 more figures: Figure 6, Figure 7, Figure 8</summary>')
    assert folded.count("<figure") == 3
    assert len(html.figures_html(figs[:html.FIGURES_OPEN])) == html.FIGURES_OPEN  # up to the limit: nothing folds


def test_main_report_with_many_runs_folds_its_long_figure_section(tmp_path, monkeypatch):
    manifest = fake_manifest(tmp_path / "data")
    runs = [make_run(tmp_path, f"run{i}", manifest, method=m, dist_loss=d, shrink=0.2 + 0.05 * i, seed=i + 1,
                     n_boot=200)
            for i, (m, d) in enumerate([(m, d) for m in ("vanilla", "lds", "ranksim") for d in (False, True)])]
    monkeypatch.setattr(html, "FIGURES_OPEN", 2)  # the predictions section has 4 figures: 2 open, 2 folded
    page = write_report(runs, tmp_path / "report").read_text()
    section = page[page.index('<h2 id="distributions">'):]
    section = section[:section.index("<h2 ", 1)]
    shown, folded = section.split('<details class="figures">')
    assert shown.count("<figure") == 2 and folded.count("<figure") == 2
    assert "<summary>2 more figures: Predicted vs laboratory potassium, Bland-Altman</summary>" in folded
    assert page.count("data:image/png;base64,") == len(list((tmp_path / "report" / "figures").glob("*.png")))


@pytest.mark.slow
def test_registry_champion_against_a_run(tmp_path, capsys):
    """``REGISTRY@champion`` is the registry's frozen copy of the champion (resolved in the CLI layer); a
    registry folder given as a run is refused with the command to run."""
    from shard_factory import write_dataset

    from ecgka.evaluation import EvalConfig, evaluate_run
    from ecgka.release.promote import promote
    from ecgka.release.registry import ModelRegistry
    from ecgka.training import load_train_config, train_run

    data = write_dataset(tmp_path / "ds", n_train=96, n_val=48, n_test=48, n_samples=200, leads=("II",),
                         shard_rows=48)
    runs = []
    for seed in (0, 1):
        run = tmp_path / f"run{seed}"
        train_run(load_train_config(None, ["model.preset=tiny", "batch_size=32", "progress=false", "threads=1",
                                           "epochs=1", f"seed={seed}", f"name=r{seed}"]), data, run)
        evaluate_run(run, data, "test", EvalConfig(n_boot=200))
        runs.append(run)
    reg = tmp_path / "registry"
    ModelRegistry(reg).register(runs[0])
    promote(reg, "v1")
    out = tmp_path / "report"
    assert cli_main(["report", f"{reg}@champion", str(runs[1]), "--compare", "--n-boot", "200",
                     "--out", str(out)]) == 0
    saved = json.loads((out / "metrics.json").read_text())["comparison"]
    assert str(reg / "versions" / "v0001" / "run") in saved["champion"] and str(runs[1]) in saved["challenger"]
    champion = metric_value(RunDir(runs[0]).read_metrics("test"), "regression.all.mae")
    assert saved["rows"][0]["metric"] == "regression.all.mae" and saved["rows"][0]["champion"] == champion
    capsys.readouterr()
    assert cli_main(["report", str(reg), str(runs[1]), "--out", str(tmp_path / "other")]) != 0
    assert f"`ecgka report {reg}@champion CHALLENGER_RUN --compare --out DIR`" in _one_line_error(capsys)
