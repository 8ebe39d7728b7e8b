"""Run one async WPS job in a fresh interpreter: ``python -m wps_processes.runner JOB.json``.

PyWPS starts async jobs with ``multiprocessing`` (a bare ``fork``) from the
threaded HTTP server. A fork copies locks other threads hold at that instant
(the job-log lock, GDAL's mutexes during a concurrent sync job), and the child
then blocks forever: jobs stuck "accepted" or "started". Here a job is a new
process (fork + exec): the server writes the job's request to
``users/<user>/runs/<job>/.work/job-request.json`` and this module rebuilds the
service from it (same settings, same process classes), runs the job, and starts
the next queued one. The job stays in the server's process group, so stopping
the platform stops its jobs too.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger("geoportal.wps")
REQUEST_FILE = "job-request.json"
_CHILDREN: list[subprocess.Popen[bytes]] = []


def _class_path(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def start_job(process: Any, wps_request: Any) -> None:
    """Write the job's request next to its workdir and start a runner for it."""
    from wps_processes.base import runtime

    rt = runtime()
    service = process.service
    job = {
        "uuid": str(process.uuid),
        "identifier": process.identifier,
        "workdir": process.workdir,
        "wps_request": wps_request.json,
        "settings": rt.settings.model_dump(mode="json"),
        "public_base": rt.public_base,
        "processes": [_class_path(p) for p in service.processes.values()],
    }
    work = Path(process.workdir)
    work.mkdir(parents=True, exist_ok=True)
    path = work / REQUEST_FILE
    tmp = work / f".{REQUEST_FILE}.tmp"
    tmp.write_text(json.dumps(job))
    os.replace(tmp, path)
    # reap finished runners of this process, then start the new one
    _CHILDREN[:] = [child for child in _CHILDREN if child.poll() is None]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and Path(p).is_dir())
    _CHILDREN.append(
        subprocess.Popen(
            [sys.executable, "-m", "wps_processes.runner", str(path)],
            env=env,
            stdin=subprocess.DEVNULL,
            close_fds=True,
        )
    )


def run_job(path: Path) -> None:
    """Rebuild the service described by ``path`` and run the job to its end."""
    from pywps.app.WPSRequest import WPSRequest
    from pywps.response.execute import ExecuteResponse

    from geoportal.settings import Settings
    from wps_processes.app import build_service

    job = json.loads(path.read_text())
    classes = []
    for spec in job["processes"]:
        module, _, name = spec.partition(":")
        classes.append(getattr(importlib.import_module(module), name))
    settings = Settings(**job["settings"])
    service = build_service(settings, [cls() for cls in classes], job["public_base"])
    process = service.prepare_process_for_execution(job["identifier"])
    process.set_workdir(job["workdir"])
    process._set_uuid(job["uuid"])
    process._setup_status_storage()
    process.async_ = True
    request = WPSRequest()
    request.restore_json(json.loads(job["wps_request"]))
    process.setup_outputs_from_wps_request(request)
    response = ExecuteResponse(request, process=process, uuid=job["uuid"])
    response.store_status_file = True
    process._run_process(request, response)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    run_job(Path(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
