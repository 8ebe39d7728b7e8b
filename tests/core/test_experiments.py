"""Experiment grids: configs per combination, valid Job manifests, submission over HTTP.

Submission is tested against a local server that records the requests and answers
as the Kubernetes API would (the one stand-in allowed: no cluster runs here).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import kubernetes_validate
import pytest
import yaml

from geoportal.errors import ConfigError, InvalidInputError, ResourceUnavailableError
from geoportal.experiments import (
    JobTemplate,
    expand_grid,
    load_grid,
    prepare_experiment,
    render_job,
)
from geoportal.experiments.cluster import api_client, best_run, job_status, submit_jobs
from geoportal.training import load_config

K8S_VERSION = "1.30.0"
GRID = {
    "model.architecture": ["unet", "fcn"],
    "optimizer.lr": [0.001, 0.0003],
    "batch_size": [8, 16],
}


def test_grid_expands_to_every_combination():
    combos = expand_grid({"epochs": 3}, GRID)
    assert len(combos) == 8
    params, config = combos[5]
    assert params == {"model.architecture": "fcn", "optimizer.lr": 0.001, "batch_size": 16}
    assert config.model.architecture == "fcn" and config.optimizer.lr == 0.001
    assert config.batch_size == 16 and config.epochs == 3


@pytest.mark.parametrize(
    ("grid", "field"),
    [
        ({"optimizer.learning_rate": [0.1]}, "grid.optimizer.learning_rate"),
        ({"batch_size": ["big"]}, "grid.batch_size"),
        ({"optimizer.name": ["sgd", "lbfgs"]}, "grid.optimizer.name"),
    ],
)
def test_invalid_combination_names_the_key(grid, field):
    with pytest.raises(ConfigError) as info:
        expand_grid({}, grid)
    assert info.value.field == field


def test_grid_shape_errors(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_grid({"optimizer.lr": 0.1})
    assert info.value.field == "grid.optimizer.lr"
    (tmp_path / "g.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError):
        load_grid(tmp_path / "g.yaml")
    with pytest.raises(InvalidInputError) as info2:
        prepare_experiment("Bad_Name", {}, GRID, tmp_path / "x")
    assert info2.value.field == "name"


def test_prepare_writes_one_config_per_combination(tmp_path):
    exp = prepare_experiment("lr-sweep", {"epochs": 2}, GRID, tmp_path / "exp")
    assert [r.run for r in exp.runs][:2] == ["lr-sweep-000", "lr-sweep-001"]
    files = sorted(p.name for p in (tmp_path / "exp" / "configs").iterdir())
    assert len(files) == 8
    config = load_config(exp.runs[7].config_path)
    assert config.model.architecture == "fcn" and config.batch_size == 16
    assert config.optimizer.lr == 0.0003 and config.epochs == 2
    summary = json.loads((tmp_path / "exp" / "summary.json").read_text())
    assert summary["runs"][7]["params"]["optimizer.lr"] == 0.0003


def _job(template: JobTemplate | None = None, **kw: Any) -> dict[str, Any]:
    return render_job(
        template or JobTemplate(),
        job_name=kw.get("job_name", "train-lr-sweep-000"),
        run="lr-sweep-000",
        config="users/alice/runs/exp-lr-sweep/configs/lr-sweep-000.yaml",
        user="alice",
        experiment="lr-sweep",
        params={"optimizer.lr": 0.001},
    )


def test_job_manifest_is_valid_and_complete():
    template = JobTemplate(
        image="registry.example/geoportal:cuda",
        gpus=2,
        ttl_seconds_after_finished=600,
        backoff_limit=3,
        active_deadline_seconds=7200,
        node_selector={"gpu": "a100"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    )
    job = _job(template)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    spec = job["spec"]
    assert spec["ttlSecondsAfterFinished"] == 600 and spec["backoffLimit"] == 3
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example/geoportal:cuda"
    assert container["command"] == [
        "geoportal", "train", "/storage/users/alice/runs/exp-lr-sweep/configs/lr-sweep-000.yaml",
        "--run", "lr-sweep-000",
    ]  # fmt: skip
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "geoportal-storage"
    assert container["volumeMounts"][0]["mountPath"] == "/storage"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["GEOPORTAL_STORAGE"] == "/storage" and env["GEOPORTAL_USER"] == "alice"
    assert pod["restartPolicy"] == "Never"


def test_cpu_only_job_is_valid_and_has_no_gpu():
    job = _job(JobTemplate(gpus=0))
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    assert "nvidia.com/gpu" not in json.dumps(job["spec"]["template"]["spec"]["containers"][0])


def test_validator_would_catch_a_broken_job():
    job = _job()
    job["spec"]["backofLimit"] = 1  # misspelt key: strict validation must refuse it
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)


# -- submission over HTTP -----------------------------------------------------------------------


class FakeApiServer:
    """Records requests and answers like the Kubernetes API for batch/v1 Jobs."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.status: dict[str, dict[str, Any]] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "reason": reason, "message": message, "code": code})  # fmt: skip

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(("POST", self.path, body))
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[:3] != ["apis", "batch", "v1"] or parts[5:] != ["jobs"]:
                    return self._status(404, "NotFound", "the server could not find the resource")
                ns, name = parts[4], body["metadata"]["name"]
                if (ns, name) in outer.jobs:
                    return self._status(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
                created = json.loads(json.dumps(body))
                created["metadata"]["uid"] = f"uid-{len(outer.jobs)}"
                created["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
                created["status"] = {}
                outer.jobs[(ns, name)] = created
                self._send(201, created)

            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append(("GET", self.path, None))
                parts = self.path.split("?")[0].strip("/").split("/")
                ns, name = parts[4], parts[6]
                if (ns, name) not in outer.jobs:
                    return self._status(404, "NotFound", f'jobs.batch "{name}" not found')
                job = dict(outer.jobs[(ns, name)])
                job["status"] = outer.status.get(name, {})
                self._send(200, job)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def apiserver():
    with FakeApiServer() as server:
        yield server


def test_submit_creates_jobs_and_reads_status(apiserver):
    api = api_client(host=apiserver.url, token="secret")
    jobs = [_job(job_name=f"train-x-{i}") for i in range(3)]
    result = submit_jobs(jobs, api)
    assert [r.submitted for r in result] == ["created"] * 3
    posts = [r for r in apiserver.requests if r[0] == "POST"]
    assert [p[1] for p in posts] == ["/apis/batch/v1/namespaces/geoportal/jobs"] * 3
    assert posts[0][2] == jobs[0]  # the manifest went over the wire unchanged
    # Submitting again is harmless: the API answers 409 and the Job is reported as existing.
    assert submit_jobs(jobs[:1], api)[0].submitted == "exists"
    apiserver.status["train-x-0"] = {
        "succeeded": 1,
        "conditions": [{"type": "Complete", "status": "True"}],
    }
    apiserver.status["train-x-1"] = {"active": 1}
    apiserver.status["train-x-2"] = {
        "failed": 3,
        "conditions": [{"type": "Failed", "status": "True"}],
    }
    states = [job_status(f"train-x-{i}", "geoportal", api).state for i in range(3)]
    assert states == ["succeeded", "running", "failed"]
    assert job_status("train-gone", "geoportal", api).state == "gone"
    assert apiserver.requests[-1][1] == "/apis/batch/v1/namespaces/geoportal/jobs/train-gone/status"


def test_unreachable_api_is_a_clear_error():
    api = api_client(host="http://127.0.0.1:9")
    api.configuration.retries = 0
    with pytest.raises(ResourceUnavailableError) as info:
        submit_jobs([_job()], api)
    assert info.value.field == "kubernetes"


def test_best_run_reads_metrics(tmp_path):
    for run, value in [("e-000", 0.61), ("e-001", 0.83), ("e-002", None)]:
        (tmp_path / run).mkdir()
        record = {"monitor": "val_mean_f1", "best_value": value, "best_epoch": 4}
        (tmp_path / run / "metrics.json").write_text(json.dumps(record))
    best = best_run(tmp_path, ["e-000", "e-001", "e-002", "e-003"])
    assert best is not None and best["run"] == "e-001" and best["value"] == 0.83
    for run, value in [("l-0", 0.4), ("l-1", 0.2)]:
        (tmp_path / run).mkdir()
        (tmp_path / run / "metrics.json").write_text(
            json.dumps({"monitor": "val_loss", "best_value": value})
        )
    assert best_run(tmp_path, ["l-0", "l-1"])["run"] == "l-1"  # loss is minimised
    assert best_run(tmp_path, ["nothing"]) is None


def test_cli_renders_and_submits(tmp_path, monkeypatch, apiserver):
    from typer.testing import CliRunner

    from geoportal.cli import app

    storage = tmp_path / "storage"
    monkeypatch.setenv("GEOPORTAL_STORAGE", str(storage))
    monkeypatch.setenv("GEOPORTAL_USER", "alice")
    base = tmp_path / "base.yaml"
    base.write_text("epochs: 4\ndata: {samples: users/alice/samples/s2}\n")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"optimizer.lr": [0.01, 0.001], "batch_size": [8, 32]}))
    runner = CliRunner()
    result = runner.invoke(
        app, ["experiments", str(base), str(grid), "--name", "sweep", "--gpus", "1"]
    )
    assert result.exit_code == 0, result.output
    folder = storage / "users" / "alice" / "runs" / "exp-sweep"
    docs = list(yaml.safe_load_all((folder / "jobs.yaml").read_text()))
    assert len(docs) == 4 and len(list((folder / "configs").iterdir())) == 4
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert apiserver.requests == []  # rendering never talks to a cluster

    # Pretend two runs finished (the Jobs write metrics.json into the shared storage).
    for run, value in [("sweep-001", 0.7), ("sweep-002", 0.9)]:
        (storage / "users/alice/models" / run).mkdir(parents=True)
        (storage / "users/alice/models" / run / "metrics.json").write_text(
            json.dumps({"monitor": "val_mean_f1", "best_value": value, "best_epoch": 3})
        )
    args = ["experiments", str(base), str(grid), "--name", "sweep", "--submit",
            "--api-server", apiserver.url]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len([r for r in apiserver.requests if r[0] == "POST"]) == 4
    assert "best run: sweep-002" in result.output
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["best"]["run"] == "sweep-002"
    assert {r["state"] for r in summary["runs"]} == {"pending"}
    result = runner.invoke(app, ["experiments", str(base), str(grid), "--name", "Sweep!"])
    assert result.exit_code == 2 and "[name]" in result.output
