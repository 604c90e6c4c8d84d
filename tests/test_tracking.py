"""``--tracker mlflow``: a run's options, per-epoch metrics and files reach MLflow, in a local
store and through a real ``mlflow server``; ``--resume`` continues the same MLflow run; without
the extra, the flag is one line saying how to install it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import invoke

from medgraft.config.loading import options_sha256
from medgraft.config.schema import TrainConfig
from medgraft.errors import MedgraftError
from medgraft.training.tracking import INSTALL_HINT, RUN_ID_FILE

SERVER_START_SECONDS = 120
TINY_TRAINING = (
    "--epochs", "2", "--batch-size", "16", "--samples-per-epoch", "32", "--val-fraction", "0.25",
    "--offline", "--tracker", "mlflow",
)  # fmt: skip


def train_tracked(runner, data: Path, run: Path, *extra: str) -> str:
    """A tiny tracked training; returns the id of its MLflow run."""
    result = invoke(
        runner, "train", "--recipe", "none", "--data", data, "--output", run, *TINY_TRAINING, *extra
    )
    assert result.exit_code == 0, result.output
    return (run / RUN_ID_FILE).read_text().strip()


def assert_run_holds_the_training(tracking_uri: str, run_id: str, run: Path) -> None:
    """Options and fingerprint as parameters, two epochs of metrics, the final per-class
    scores, and the run's files as artifacts."""
    client = pytest.importorskip("mlflow.tracking").MlflowClient(tracking_uri)
    tracked = client.get_run(run_id)
    assert tracked.info.status == "FINISHED"
    params = tracked.data.params
    assert params["epochs"] == "2" and params["batch_size"] == "16"
    assert params["augment.enabled"] == "True" and params["tracker"] == "mlflow"
    config = (run / "config.json").read_text()
    assert params["options_sha256"] in config
    for metric in ("train_loss", "val_mean_dice", "val_dice_Anterior", "val_dice_Posterior"):
        history = client.get_metric_history(run_id, metric)
        assert [m.step for m in history] == [1, 2], metric
    assert {"final_dice_Anterior", "final_dice_Posterior", "final_mean_dice"} <= set(
        tracked.data.metrics
    )
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "curves.png", "val_cases.csv"} <= artifacts
    assert (run / "tensorboard").is_dir()  # TensorBoard is still written


@pytest.mark.slow
def test_a_tracked_run_lands_in_a_local_store_and_resume_continues_it(
    runner, micro_msd: Path, tmp_path: Path, monkeypatch
) -> None:
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # a SQLite store keeps artifacts in ./mlruns
    run = tmp_path / "run"
    run_id = train_tracked(runner, micro_msd, run)
    found = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert [r.info.run_id for r in found] == [run_id]
    assert_run_holds_the_training(uri, run_id, run)

    assert train_tracked(runner, micro_msd, run, "--resume", "--epochs", "3") == run_id
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == 1
    client = mlflow.tracking.MlflowClient(uri)
    resumed = client.get_run(run_id)
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == [1, 2, 3]
    assert resumed.info.status == "FINISHED" and resumed.data.params["epochs"] == "2"
    assert resumed.data.tags["resumed.epochs"] == "3"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    """Poll ``/health`` until the server answers, within a bounded time."""
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    pytest.fail(f"mlflow server not healthy after {SERVER_START_SECONDS} s:\n{log.read_text()}")


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 (SQLite store, artifacts in ``tmp_path``),
    stopped however the test ends."""
    pytest.importorskip("mlflow")
    port, log = free_port(), tmp_path / "server.log"
    command = [
        *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)),
        *("--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}"),
        *("--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"),
    ]
    with log.open("w") as output:
        server = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, cwd=tmp_path, env=os.environ.copy()
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url, server, log)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.mark.slow
def test_a_tracked_run_reaches_a_real_mlflow_server(
    runner, micro_msd: Path, tmp_path: Path, mlflow_server: str, monkeypatch
) -> None:
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    run = tmp_path / "run"
    run_id = train_tracked(runner, micro_msd, run)
    found = mlflow.search_runs(search_all_experiments=True)
    assert list(found["run_id"]) == [run_id]
    assert found["params.options_sha256"][0] in (run / "config.json").read_text()
    assert_run_holds_the_training(mlflow_server, run_id, run)
    assert list((tmp_path / "artifacts").rglob("curves.png"))  # stored by the server


def test_without_mlflow_the_tracker_is_one_line_before_any_data(
    runner, tmp_path: Path, monkeypatch
) -> None:
    """The install hint, exit 1, from the trainer's construction: the data folder (absent
    here) is never read and no run folder is made."""
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` fails as if absent
    where = ["--data", tmp_path / "absent", "--output", tmp_path / "run"]
    result = invoke(runner, "train", "--recipe", "none", *where, "--offline", "--tracker", "mlflow")
    assert result.exit_code == 1
    assert isinstance(result.exception, MedgraftError)
    assert str(result.exception) == INSTALL_HINT
    assert not (tmp_path / "run").exists()


def test_tracking_leaves_the_options_fingerprint_alone() -> None:
    """Where a run is tracked does not change what it computes: committed fingerprints stay."""
    plain = TrainConfig(data="d", output="o")
    assert options_sha256(plain) == options_sha256(replace(plain, tracker="mlflow"))
