"""The dataset folder as any tool reads it (schema 3): pyarrow, DuckDB, Polars and pandas see exactly the
shard rows with a hive ``split`` column, also with variants and a kept work folder; shards describe
themselves; an old layout asks for a rebuild, and a build into it is refused."""

from __future__ import annotations

import json

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from test_build_e2e import _cfg, standin  # noqa: F401  (the stand-in fixture and the small-build config)

from ecgka.catalog import DATASET_SCHEMA_VERSION, DatasetDir
from ecgka.data.build import build_dataset
from ecgka.data.manifest import read_shard_metadata
from ecgka.errors import InputError
from ecgka.keys import SPLITS, Col
from ecgka.training.shard_loading import load_split

pytestmark = pytest.mark.slow  # end to end: `make test` runs it, `make test-fast` skips it


def _build(standin, out, extra=()):  # noqa: F811
    return build_dataset(standin / "ecg", [standin / "hosp" / "labevents.csv.gz"], out, _cfg(list(extra)),
                         d_labitems=standin / "hosp" / "d_labitems.csv.gz")


@pytest.fixture(scope="module")
def full(standin, tmp_path_factory):  # noqa: F811
    """A build with two variants and its work folder kept: every kind of file a dataset folder may hold."""
    out = tmp_path_factory.mktemp("layout") / "ds"
    manifest = _build(standin, out, ["variants.ratios=[2,4]", "keep_work=true"])
    load_split(out, "train")  # a signal cache too
    return DatasetDir(out), manifest


def _expected(manifest: dict) -> dict[str, int]:
    return {s: manifest["counts"][s] for s in SPLITS}


def test_the_folder_holds_shards_ledgers_views_work_and_cache(full):
    ds, m = full
    assert m["variants"] == ["ir2", "ir4"] and ds.work_root.is_dir() and any(ds.cache_dir.iterdir())
    parquet = sorted(ds.path.rglob("*.parquet"))
    assert parquet == sorted(p for s in SPLITS for p in ds.shards(s))
    assert {p.parent for p in parquet} == {ds.split_dir(s) for s in SPLITS}
    assert ds.exclusions_path.suffix == ".csv" and all(ds.variant(v).exclusions_path.is_file() for v in m["variants"])


def test_pyarrow_dataset_reads_exactly_the_shards(full):
    ds, m = full
    dataset = pads.dataset(ds.path, format="parquet", partitioning="hive", exclude_invalid_files=True)
    table = dataset.to_table(columns=[Col.SAMPLE_ID.value, Col.POTASSIUM.value, "split"])
    assert table.num_rows == sum(_expected(m).values())
    assert table.to_pandas()["split"].value_counts().to_dict() == _expected(m)
    assert dataset.schema.field(Col.SIGNAL.value).type.list_size == 5000


def test_duckdb_reads_exactly_the_shards(full):
    ds, m = full
    rows = duckdb.sql(f"SELECT split, count(*) FROM read_parquet('{ds.path}/**/*.parquet', hive_partitioning=true) "
                      "GROUP BY split").fetchall()
    assert dict(rows) == _expected(m)
    ids = duckdb.sql(f"SELECT count(DISTINCT sample_id) FROM read_parquet('{ds.path}/**/*.parquet', "
                     "hive_partitioning=true)").fetchall()[0][0]
    assert ids == sum(_expected(m).values())


def test_polars_reads_exactly_the_shards(full):
    ds, m = full
    frame = pl.scan_parquet(f"{ds.path}/**/*.parquet", hive_partitioning=True).select("sample_id", "split").collect()
    assert frame.height == sum(_expected(m).values())
    assert dict(frame.group_by("split").len().iter_rows()) == _expected(m)


def test_pandas_reads_the_folder_as_one_dataset(full):
    # pandas' read_parquet(DIR) has no exclude_invalid_files: it skips the non-shard names by prefix
    ds, m = full
    frame = pd.read_parquet(ds.path, columns=[Col.SAMPLE_ID.value, "split"],
                            ignore_prefixes=list(DatasetDir.READER_IGNORE_PREFIXES))
    assert frame["split"].astype(str).value_counts().to_dict() == _expected(m)
    assert frame[Col.SAMPLE_ID.value].is_unique
    for s in SPLITS:  # and a split folder holds only shards
        assert len(pd.read_parquet(ds.split_dir(s), columns=[Col.SAMPLE_ID.value])) == m["counts"][s]


def test_shards_describe_themselves(full):
    ds, m = full
    for s in SPLITS:
        for path in ds.shards(s):
            facts = read_shard_metadata(pq.read_schema(path).metadata)
            assert facts == {"schema_version": DATASET_SCHEMA_VERSION, "fingerprint": m["fingerprint"],
                             "signal": m["signal"], "label": m["label"]}
    facts = json.loads(pq.read_schema(ds.shards("train")[0]).metadata[b"ecgka"])
    assert facts["signal"]["unit"] == "mV" and facts["signal"]["layout"] == "lead-major"
    assert facts["signal"]["cleaning"]["highpass_hz"] == 0.5 and facts["signal"]["dtype"] == "float16"
    assert (facts["label"]["name"], facts["label"]["unit"], facts["label"]["lo"], facts["label"]["hi"],
            facts["label"]["step"]) == ("potassium", "mmol/L", 1.5, 10.0, 0.1)


def test_manifest_vocabulary(full):
    ds, m = full
    assert m["schema_version"] == DATASET_SCHEMA_VERSION and m["parent"] is None
    assert set(m["train_bin_counts"]) == {"lo", "step", "counts"}
    assert all(set(h) == {"lo", "step", "counts"} for h in m["label_histograms"].values())
    vm = ds.variant("ir2").read_manifest()
    assert vm["variant"]["parent"] == "../.." and ds.variant("ir2").shard_source.path == ds.path.resolve()
    assert vm["exclusions"]["not_selected_for_variant"] == m["counts"]["train"] - vm["counts"]["train"]


def _old_layout(folder):
    """A schema-1 dataset folder: split folders without ``split=``, a Parquet ledger, manifest version 1."""
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"schema_version": 1, "fingerprint": "old"}))
    (folder / "train").mkdir()
    pd.DataFrame({"row": [1]}).to_parquet(folder / "train" / "part-00000.parquet")
    pd.DataFrame({"row": [2]}).to_parquet(folder / "exclusions.parquet")
    return folder


def test_old_layout_asks_for_a_rebuild(tmp_path):
    old = _old_layout(tmp_path / "old")
    for read in (lambda: DatasetDir(old).read_manifest(), lambda: load_split(old, "train")):
        with pytest.raises(InputError) as info:
            read()
        message = str(info.value)
        assert len(message.splitlines()) == 1 and "rebuild" in message and "version 1" in message


def test_schema_2_dataset_asks_for_a_rebuild(tmp_path):
    """Schema 2 has today's layout but the old split rule (and no checksum or duplicate-lead rule): a rebuild."""
    folder = tmp_path / "v2"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"schema_version": 2, "fingerprint": "old"}))
    assert DATASET_SCHEMA_VERSION == 3
    with pytest.raises(InputError) as info:
        DatasetDir(folder).read_manifest()
    message = str(info.value)
    assert len(message.splitlines()) == 1 and "rebuild" in message and "version 2" in message
    assert "reads version 3" in message


def test_build_into_an_old_layout_is_refused(standin, tmp_path):  # noqa: F811
    """An old-layout folder has no folder marker: the build refuses it with one line and writes nothing."""
    old = _old_layout(tmp_path / "old")
    before = sorted(p.relative_to(old) for p in old.rglob("*"))
    with pytest.raises(InputError) as info:
        _build(standin, old)
    assert len(str(info.value).splitlines()) == 1 and "not written by ecgka" in str(info.value)
    assert sorted(p.relative_to(old) for p in old.rglob("*")) == before
