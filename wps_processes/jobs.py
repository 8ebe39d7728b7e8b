"""The job queue and restart recovery, on top of PyWPS's job log.

PyWPS keeps queued async requests in its logging database and starts the next
one only when a running job ends, in a fresh temporary workdir. Two things go
wrong with that on a real service (pywps #450, #495):

* a queued job loses who submitted it, because PyWPS re-creates the workdir;
  here the owner is read back from the job's run folder
  (``users/<user>/runs/<job>/job.json``), written at submission;
* after the server dies, jobs it was running stay "accepted"/"started" forever
  and queued jobs wait for an end that never comes. :func:`recover` runs at
  start: a job whose process is gone is failed with a clear message (in the
  database *and* in its status document, which is what clients poll), and the
  queue is started again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from pywps import configuration as pywps_config
from pywps import dblog
from pywps.app.WPSRequest import WPSRequest
from pywps.response.execute import ExecuteResponse
from pywps.response.status import WPS_STATUS

from wps_processes.base import WORK_DIR_NAME, find_job, runtime

LOGGER = logging.getLogger("geoportal.wps")

INTERRUPTED = (
    "the WPS server stopped while this job was running; its results are incomplete. "
    "Submit the job again."
)
UNFINISHED = (WPS_STATUS.ACCEPTED, WPS_STATUS.STARTED, WPS_STATUS.PAUSED)


def _pid_alive(pid: int | None) -> bool:
    """Whether ``pid`` is a live job process (a zombie or a reused pid is not)."""
    if not pid or pid == os.getpid():
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X") and b"wps_processes" in cmdline


def _bare_request(identifier: str) -> WPSRequest:
    request = WPSRequest()
    request.operation = "execute"
    request.version = "1.0.0"
    request.identifier = identifier
    request.inputs = {}
    request.outputs = {}
    request.lineage = False
    request.raw = False
    request.store_execute = "true"
    request.status = "true"
    request.language = "en-US"
    return request


def _process_for(service: Any, identifier: str, job_id: str) -> Any | None:
    """A copy of the process ``identifier`` set up for the existing job ``job_id``."""
    found = find_job(runtime().storage, job_id)
    if found is None:
        return None
    _, run_dir = found
    process = service.prepare_process_for_execution(identifier)
    process.set_workdir(str(run_dir / WORK_DIR_NAME))
    process._set_uuid(job_id)
    process._setup_status_storage()
    return process


def fail_job(service: Any, identifier: str | None, job_id: str, message: str) -> None:
    """Give ``job_id`` a definite failed state: database row and status document."""
    dblog.store_status(job_id, WPS_STATUS.FAILED, message, 100)
    if not identifier or identifier not in service.processes:
        return
    try:
        process = _process_for(service, identifier, job_id)
        if process is None:
            return
        process.async_ = True
        response = ExecuteResponse(_bare_request(identifier), process=process, uuid=job_id)
        response.store_status_file = True
        response._update_status(WPS_STATUS.FAILED, message, 100)
    except Exception:  # noqa: BLE001 - the database row already says failed
        LOGGER.exception("could not write the failed status document of job %s", job_id)


def launch_stored(service: Any) -> bool:
    """Start the first queued job, in its owner's run folder. Returns whether one started."""
    if service is None:
        return False
    stored = dblog.pop_first_stored()
    if not stored:
        return False
    job_id = str(stored.uuid)
    raw = stored.request
    request = WPSRequest()
    request.restore_json(json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw))
    identifier = request.identifier
    if identifier not in service.processes:
        fail_job(service, None, job_id, f"process {identifier!r} is no longer offered")
        return True
    process = _process_for(service, identifier, job_id)
    if process is None:
        fail_job(service, identifier, job_id, "the job's run folder has disappeared")
        return True
    process.async_ = True
    process.setup_outputs_from_wps_request(request)
    response = ExecuteResponse(request, process=process, uuid=job_id)
    response.store_status_file = True
    LOGGER.info("starting queued job %s (%s)", job_id, identifier)
    process._run_async(request, response)
    return True


def recover(service: Any) -> dict[str, int]:
    """Give every job a dead server left behind a definite state, then restart the queue.

    Returns:
        Counts: ``failed`` (interrupted jobs), ``requeued`` (queued jobs started now;
        the rest start as slots free up), ``running`` (jobs whose process still lives).
    """
    session = dblog.get_session()
    try:
        stored_ids = {row.uuid for row in session.query(dblog.RequestInstance.uuid)}
        rows = [
            (row.uuid, row.pid, row.identifier, row.status)
            for row in session.query(dblog.ProcessInstance).filter(
                dblog.ProcessInstance.operation == "execute"
            )
            if row.uuid not in stored_ids
            and (row.status in UNFINISHED or row.status is None)
            and (row.percent_done is None or row.percent_done < 100)
        ]
    finally:
        session.close()
    counts = {"failed": 0, "requeued": 0, "running": 0}
    for job_id, pid, identifier, _status in rows:
        if _pid_alive(pid):
            counts["running"] += 1
            continue
        LOGGER.warning("job %s (%s) was interrupted by a server stop", job_id, identifier)
        fail_job(service, identifier, job_id, INTERRUPTED)
        counts["failed"] += 1
    limit = int(pywps_config.get_config_value("server", "parallelprocesses"))
    while True:
        running, stored = dblog.get_process_counts()
        if not stored or (limit != -1 and running >= limit):
            break
        if not launch_stored(service):
            break
        counts["requeued"] += 1
    if any(counts.values()):
        LOGGER.info("recovered jobs: %s", counts)
    return counts
