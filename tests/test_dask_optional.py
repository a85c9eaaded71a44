"""Dask is the optional ``ecgka[dask]`` extra: the build never imports it unless asked, and asking without it
installed is a one-line ConfigError naming the extra."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ecgka.cli import main
from ecgka.data.executors import DASK_HINT, make_executor
from ecgka.errors import ConfigError


@pytest.fixture
def no_dask(monkeypatch):
    """Dask made unimportable, as in an environment installed without the extra."""
    for name in ("dask", "dask.distributed", "distributed"):
        monkeypatch.setitem(sys.modules, name, None)


def test_dask_executor_without_dask_names_the_extra(no_dask):
    with pytest.raises(ConfigError, match=r"pip install 'ecgka\[dask\]'"):
        make_executor(workers=1, dask_scheduler="tcp://127.0.0.1:1")
    assert make_executor(workers=1).name == "inline"  # local builds need no Dask


def test_build_cli_without_dask_is_one_line(no_dask, tmp_path, capsys):
    from ecgka.standin import ECG_DIR, HOSP_DIR, LABEVENTS, generate_standin

    standin = tmp_path / "standin"
    generate_standin(standin, subjects=12, seed=0, workers=1)
    code = main(["build", "--ecg-root", str(standin / ECG_DIR), "--labs", str(standin / HOSP_DIR / LABEVENTS),
                 "--out", str(tmp_path / "dataset"), "--dask-scheduler", "tcp://127.0.0.1:1", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and DASK_HINT in err


def test_importing_the_build_does_not_import_dask():
    code = ("import sys, ecgka.data.build, ecgka.cli.build, ecgka.pipeline; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
