"""The pipeline on Dask: stages at once, each in its own process; failures stop only their downstream;
``log.jsonl`` and ``ecgka run --status``; the worker-per-GPU specs and a stage's GPU environment; Slurm."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pipeline_kinds  # noqa: F401  (registers the tiny ``text`` and ``gpu_text`` stage kinds)
import pytest

from ecgka.catalog import PipelineDir
from ecgka.cli import main
from ecgka.errors import ConfigError, InputError
from ecgka.io import read_json
from ecgka.pipeline import load_pipeline, run_pipeline
from ecgka.pipeline.clusters import WorkerSpec, slurm_cluster, visible_gpus, worker_specs
from ecgka.pipeline.executors import exit_reason, first_device, stage_env
from ecgka.pipeline.runner import PipelineFailed, StageResult, upstream_state
from ecgka.pipeline.status import read_log, status_table

TESTS = Path(__file__).resolve().parent

PIPELINE = """
name: par
stages:
  - {id: a, kind: text, text: A, sleep: %(sleep)s}
  - {id: b, kind: text, text: B, sleep: %(sleep)s}
  - {id: bad, kind: text, text: X, fail: true}
  - {id: after_bad, kind: text, text: Y, source: "${bad}"}
  - {id: ab, kind: gpu_text, text: C, source: "${a}", gpu_note: true}
"""


def _pipeline(tmp_path: Path, sleep: float = 0.0) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE % {"sleep": sleep})
    return path


# ---- pure parts --------------------------------------------------------------------------------------------


def test_worker_specs_pin_one_worker_per_gpu_and_cpu_workers_see_none():
    assert worker_specs(3, ["0", "1"]) == [
        WorkerSpec("gpu0", {"CUDA_VISIBLE_DEVICES": "0"}, {"GPU": 1}),
        WorkerSpec("gpu1", {"CUDA_VISIBLE_DEVICES": "1"}, {"GPU": 1}),
        WorkerSpec("cpu0", {"CUDA_VISIBLE_DEVICES": ""}, {}),
    ]
    assert [s.name for s in worker_specs(2, ["4", "5", "6"])] == ["gpu4", "gpu5"]
    assert worker_specs(2, []) == [WorkerSpec("cpu0"), WorkerSpec("cpu1")]  # a CPU machine: env untouched
    with pytest.raises(ConfigError, match="--parallel must be >= 1"):
        worker_specs(0, [])


def test_visible_gpus_follow_cuda_visible_devices():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1, 3"}) == ["1", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_a_stage_process_sees_its_workers_gpu_alone():
    base = {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "2,3,0,1"}  # dask-cuda's rotated list: own device first
    assert first_device(base["CUDA_VISIBLE_DEVICES"]) == "2"
    env, gpu = stage_env(base, gpu_stage=True, gpu_worker=True)
    assert (env["CUDA_VISIBLE_DEVICES"], gpu, env["PATH"]) == ("2", "2", "/bin")
    env, gpu = stage_env(base, gpu_stage=False, gpu_worker=True)  # a CPU stage takes no GPU
    assert (env["CUDA_VISIBLE_DEVICES"], gpu) == ("", None)
    env, gpu = stage_env({"PATH": "/bin"}, gpu_stage=True, gpu_worker=False)  # no GPU workers: as it is
    assert (env, gpu) == ({"PATH": "/bin"}, None)


def test_exit_reason_names_the_error_line_or_the_signal():
    assert exit_reason(2, "progress\nerror: labs.csv: missing column itemid\n") == "labs.csv: missing column itemid"
    assert "SIGKILL (out of memory?)" in exit_reason(-9, "")
    assert exit_reason(1, "Traceback\nValueError: boom\n") == "the stage process exited with 1: ValueError: boom"


def test_a_stage_starts_when_what_it_reads_is_done_and_never_after_a_failure():
    def result(status: str) -> StageResult:
        return StageResult("x", "text", status, 0.0, Path("x"))

    assert upstream_state(set(), {}) == "ready"
    assert upstream_state({"a", "b"}, {"a": result("ran"), "b": result("skipped")}) == "ready"
    assert upstream_state({"a", "b"}, {"a": result("ran")}) == "waiting"
    assert upstream_state({"a", "b"}, {"a": result("failed")}) == "blocked"
    assert upstream_state({"a"}, {"a": result("not run")}) == "blocked"


def test_a_stage_waits_for_earlier_stages_that_write_where_it_reads(tmp_path):
    """The smoke chain's graph: the report waits for the evaluations (they write into the runs it reads);
    the Dist Loss training does not wait for the later evaluation of its init run; two evaluations of one
    run are ordered (both write into it)."""
    from ecgka.pipeline.runner import stage_graph
    from ecgka.resources import find_pipeline

    pipeline = find_pipeline(Path("smoke"))
    spec = load_pipeline(pipeline)
    graph = stage_graph(spec, tmp_path / "out", pipeline.resolve().parent.parent)
    assert graph["report"] == {"vanilla", "dist_loss", "eval_vanilla", "eval_dist_loss"}
    assert graph["dist_loss"] == {"dataset", "vanilla"} and graph["eval_vanilla"] == {"dataset", "vanilla"}
    assert graph["standin"] == set()
    twice = tmp_path / "twice.yaml"
    twice.write_text("name: t\nstages:\n  - {id: r, kind: text, text: R}\n"
                     "  - {id: e1, kind: text, text: A, source: '${r}'}\n"
                     "  - {id: e2, kind: evaluate, run: '${r}', data: '${r}', split: val}\n"
                     "  - {id: e3, kind: evaluate, run: '${r}', data: '${r}', split: test}\n")
    graph = stage_graph(load_pipeline(twice), tmp_path / "out2", tmp_path)
    assert graph["e3"] == {"r", "e2"} and graph["e2"] == {"r"} and graph["e1"] == {"r"}


def test_parallel_and_dask_scheduler_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["run", "smoke", "--parallel", "2", "--dask-scheduler", "tcp://x:1"])
    assert exited.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert main(["run", "smoke", "--parallel", "0"]) == 2
    assert "parallel" in capsys.readouterr().err


# ---- the sequential run: same runner, in this process -------------------------------------------------------


def test_a_failed_stage_stops_only_its_downstream_and_the_log_says_what_ran(tmp_path, capsys):
    spec = load_pipeline(_pipeline(tmp_path))
    out = tmp_path / "out"
    with pytest.raises(PipelineFailed) as failed:
        run_pipeline(spec, out, tmp_path, log=lambda s: None)
    assert failed.value.exit_code == 2  # the failed stage's own exit code (an input error)
    assert str(failed.value) == ("stage 'bad' failed: X: refused on purpose; not run, downstream of a failure: "
                                 "after_bad")
    statuses = {r.id: r.status for r in failed.value.results}
    assert statuses == {"a": "ran", "b": "ran", "bad": "failed", "after_bad": "not run", "ab": "ran"}
    assert (out / "ab" / "out.txt").read_text() == "AC" and not (out / "after_bad").exists()
    summary = read_json(PipelineDir(out).summary)["stages"]
    assert [(s["id"], s["status"]) for s in summary] == list(statuses.items())
    records = read_log(out)
    assert [(r["stage"], r["status"], r["worker"], r["gpu"]) for r in records] == [
        ("a", "done", "inline", None), ("b", "done", "inline", None), ("bad", "failed", "inline", None),
        ("ab", "done", "inline", None)]
    assert all(r["start"].endswith("Z") and r["start"] <= r["end"] for r in records)
    assert records[2]["error"] == "X: refused on purpose" and records[2]["exit_code"] == 2
    # the status table, from the command line
    assert main(["run", "--status", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["stage", "status", "start", "end", "seconds", "worker", "gpu"]
    assert table[3].split()[:2] == ["bad", "failed"] and table[4].strip() == "X: refused on purpose"
    assert table[-1] == "4 stage run(s), 1 failed"
    # a re-run skips what is done and tries the failed stage again
    with pytest.raises(PipelineFailed):
        run_pipeline(spec, out, tmp_path, log=lambda s: None)
    assert [r["stage"] for r in read_log(out)][4:] == ["bad"]


def test_status_of_a_folder_without_a_log_is_one_line(tmp_path, capsys):
    assert main(["run", "--status", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "log.jsonl: no such file" in err
    PipelineDir(tmp_path).log.write_text('{"stage": "a"}\nnot json\n')
    with pytest.raises(InputError, match=r"log.jsonl: line 2: not JSON"):
        read_log(tmp_path)
    assert status_table([{"stage": "a", "status": "done", "seconds": 1.25}]).splitlines()[1].split() == [
        "a", "done", "-", "-", "1.2", "-", "-"]


# ---- Slurm: the shipped example builds a cluster and its job script without Slurm -------------------------------


def test_the_slurm_example_asks_one_gpu_per_worker(tmp_path):
    cluster = slurm_cluster(log_directory=str(tmp_path / "logs"))
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --gres=gpu:1" in script and "#SBATCH -t 24:00:00" in script
    assert "#SBATCH --mem=60G" in script and "#SBATCH --cpus-per-task=8" in script
    assert "--resources GPU=1" in script and "--nthreads 1" in script
    bad = tmp_path / "bad.yaml"
    bad.write_text("queue: gpu\ncores: 1\nmemory: 1GB\nno_such_option: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        slurm_cluster(bad)
    with pytest.raises(ConfigError, match="no such cluster config"):
        slurm_cluster(tmp_path / "missing.yaml")


# ---- a real local Dask cluster of worker processes --------------------------------------------------------------


@pytest.mark.slow
def test_stages_run_at_once_in_their_own_processes_on_a_local_cluster(tmp_path):
    """Two workers, one pinned to a (pretend) GPU 7: a and b overlap; the GPU stage runs on the GPU worker and
    sees device 7 alone; the failure stops only its downstream; every stage ran in a process of its own."""
    from ecgka.pipeline.clusters import local_cluster
    from ecgka.pipeline.executors import DaskExecutor

    spec = load_pipeline(_pipeline(tmp_path, sleep=1.5))
    out = tmp_path / "out"
    crash = tmp_path / "crash.yaml"
    crash.write_text("name: crash\nstages:\n  - {id: killed, kind: text, text: K, crash: true}\n"
                     "  - {id: after, kind: text, text: A, source: '${killed}'}\n"
                     + "".join(f"  - {{id: other{i}, kind: text, text: O}}\n" for i in range(3)))
    cluster = local_cluster(2, devices=["7"])
    try:  # by its address, as `ecgka run --dask-scheduler ADDRESS` connects
        with pytest.raises(PipelineFailed) as failed:
            run_pipeline(spec, out, tmp_path, log=lambda s: None, executor=DaskExecutor(cluster.scheduler_address))
        # a stage killed like an out-of-memory victim fails alone; the workers live on and run the others
        with pytest.raises(PipelineFailed, match=r"stage 'killed' failed: the stage process was killed by "
                                                 r"SIGKILL \(out of memory\?\); not run, downstream of a "
                                                 r"failure: after$") as killed:
            run_pipeline(load_pipeline(crash), tmp_path / "crash", tmp_path, log=lambda s: None,
                         executor=DaskExecutor(cluster.scheduler_address))
        assert killed.value.exit_code == 137
        assert [r.status for r in killed.value.results] == ["failed", "not run", "ran", "ran", "ran"]
    finally:
        cluster.close()
    assert failed.value.exit_code == 2
    assert {r.id: r.status for r in failed.value.results} == {"a": "ran", "b": "ran", "bad": "failed",
                                                              "after_bad": "not run", "ab": "ran"}
    records = {r["stage"]: r for r in read_log(out)}
    assert records["a"]["start"] < records["b"]["end"] and records["b"]["start"] < records["a"]["end"]
    assert {records["a"]["worker"], records["b"]["worker"]} == {"gpu7", "cpu0"}
    assert (records["ab"]["worker"], records["ab"]["gpu"]) == ("gpu7", "7")
    assert (out / "ab" / "cuda").read_text() == "7"
    pids = {(out / s / "pid").read_text() for s in ("a", "b", "ab")}
    assert len(pids) == 3 and str(os.getpid()) not in pids
    assert "refused on purpose" in PipelineDir(out).console("bad").read_text()
    assert read_json(PipelineDir(out).marker("ab"))["fingerprint"]


DRIVER = """
import sys
sys.path.insert(0, {tests!r})
import pipeline_kinds  # noqa: F401
from ecgka.cli import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
"""

RESUME = """
name: resume
vars: {gate: ""}
stages:
  - {id: quick, kind: text, text: Q}
  - {id: slow, kind: text, text: S, wait_for: "${vars.gate}"}
  - {id: after, kind: text, text: A, source: "${quick}"}
"""


@pytest.mark.slow
def test_killing_a_parallel_job_and_starting_it_again_skips_what_was_done(tmp_path):
    """SIGTERM to ``ecgka run --parallel 2`` while a stage runs: the job ends (143) and so does the stage's
    process; started again, the job skips the finished stages and runs the interrupted one."""
    (tmp_path / "p.yaml").write_text(RESUME)
    (tmp_path / "drive.py").write_text(DRIVER.format(tests=str(TESTS)))
    out, gate = tmp_path / "out", tmp_path / "gate"
    command = [sys.executable, str(tmp_path / "drive.py"), "run", str(tmp_path / "p.yaml"), "--out", str(out),
               "--parallel", "2", "--set", f"gate={gate}"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    folder = PipelineDir(out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None and not (
            folder.marker("after").is_file() and read_json(folder.marker("after"))["fingerprint"]
            and (out / "slow" / "pid").is_file()):
        time.sleep(0.2)
    assert first.poll() is None, first.communicate()[0]
    slow_pid = int((out / "slow" / "pid").read_text())
    first.send_signal(signal.SIGTERM)
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 143, output
    assert not _alive(slow_pid), "the stage process outlived the job"
    assert read_json(folder.marker("slow"))["fingerprint"] is None  # pending: interrupted
    gate.touch()  # the slow stage may end now (same options, same fingerprint)
    second = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "[skip] quick (text): complete and unchanged" in second.stdout
    assert "[skip] after (text): complete and unchanged" in second.stdout
    assert "[run ] slow" in second.stdout and "1 stage(s) ran, 2 skipped" in second.stdout
    assert [r["stage"] for r in read_log(out)] == ["quick", "after", "slow"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_log_lines_are_json(tmp_path):
    from ecgka.pipeline.runner import append_log

    path = tmp_path / "log.jsonl"
    append_log(path, {"stage": "a", "gpu": None})
    append_log(path, {"stage": "b", "gpu": "0"})
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"stage": "a", "gpu": None},
                                                                          {"stage": "b", "gpu": "0"}]


@pytest.mark.slow
def test_the_smoke_pipeline_gives_the_same_weights_and_metrics_in_parallel(tmp_path):
    """The smoke chain sequentially in this process, then its training and evaluation stages again on a local
    cluster of two worker processes (from a copy of the stand-in and the dataset, which it skips): the same
    weights, tensor for tensor, and the same metrics."""
    import shutil

    import torch

    from ecgka.catalog import RunDir
    from ecgka.pipeline.clusters import local_cluster
    from ecgka.pipeline.executors import DaskExecutor
    from ecgka.resources import find_pipeline

    pipeline = find_pipeline(Path("smoke"))
    spec = load_pipeline(pipeline, {"subjects": 120})
    project = pipeline.resolve().parent.parent
    runs = ["vanilla", "dist_loss"]
    stages = {"standin", "dataset", *runs, "eval_vanilla", "eval_dist_loss"}
    seq, par = tmp_path / "seq", tmp_path / "par"
    run_pipeline(spec, seq, project, only=stages, log=lambda s: None)
    shutil.copytree(seq, par)  # a moved pipeline folder keeps its fingerprints: standin and dataset skip
    PipelineDir(par).log.unlink()
    for name in stages - {"standin", "dataset"}:
        PipelineDir(par).marker(name).unlink()
    for run in runs:
        shutil.rmtree(par / run)
    cluster = local_cluster(2, devices=[])
    try:
        results = run_pipeline(spec, par, project, only=stages, log=lambda s: None, executor=DaskExecutor(cluster))
    finally:
        cluster.close()
    assert {r.id: r.status for r in results if r.id in stages} == {
        "standin": "skipped", "dataset": "skipped", **dict.fromkeys(stages - {"standin", "dataset"}, "ran")}
    assert {r["worker"] for r in read_log(par)} <= {"cpu0", "cpu1"}
    for run in runs:
        a, b = (torch.load(RunDir(folder / run).checkpoint("best"), map_location="cpu", weights_only=False)["model"]
                for folder in (seq, par))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), run
        metrics = [RunDir(folder / run).read_metrics("test")["regression"] for folder in (seq, par)]
        assert metrics[0] == metrics[1], run
