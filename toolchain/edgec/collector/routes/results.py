"""``/v1/results`` and ``/v1/report``: agents' reports stored once (from the lease holder only),
read back one by one or as the rows of ``edgec report``.

A posted result is the agents' most frequent call: :func:`fast_post_result` serves it without the
framework's layers (the :func:`post_result` route documents it), with the same parsing,
validation, checks and answers."""

# No "from __future__ import annotations": FastAPI reads the endpoints' annotations at runtime.
import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from edgec import report
from edgec.agent import schema as report_schema
from edgec.collector import API, storage
from edgec.collector.bodies import StrictRoute, error_list, printable, strict_json
from edgec.collector.guard import send_json, too_large_message
from edgec.collector.messages import ResultPost, ResultStored
from edgec.collector.routes.shared import CONFLICT, NOT_FOUND, Collector, JobId, Shared
from edgec.collector.storage.errors import RecordRefused, StoreFailed

router = APIRouter(route_class=StrictRoute)


async def store_result(c: Collector, body: ResultPost, me: str | None) -> tuple[int, dict[str, Any]]:
    """Check and store a posted result: (status, answer); ``me`` is the device of the credential.

    Raises:
        HTTPException: 403 for another device's result, 422 for an invalid report.
        RecordRefused: what the record refuses (unknown job, lease not current, ...).
        StoreFailed: the database failed.
    """
    if me is not None and me != body.device:
        raise HTTPException(403, f"the credential of device '{me}' cannot act for device '{body.device}'")
    problems = report_schema.validate(body.report)
    if problems:
        raise HTTPException(422, "invalid agent report: " + "; ".join(problems[:10]))
    report_text = json.dumps(body.report)
    # the digest of the post as sent; a re-post with other text is compared as a document
    digest = hashlib.sha256(f"{body.uid}\n{body.job_id}\n{body.lease_id}\n{body.device}\n{body.instance}\n"
                            f"{report_text}".encode()).hexdigest()
    args = (body.uid, digest, body.job_id, body.lease_id, body.device, body.instance, body.report, report_text)
    out = await c.async_results.post_result(*args) if c.async_results is not None else None
    if out is None:
        out = await c.write(storage.results.post_result, *args)
    if not out["duplicate"]:
        c.changes.notify_finished()  # a job ended; no job to lease came of it
    return (200 if out["duplicate"] else 201), out


@router.post(API + "/results", tags=["agents"], status_code=201, response_model=ResultStored,
             responses={200: {"model": ResultStored, "description": "already stored (same id and body)"},
                        **NOT_FOUND, **CONFLICT})
async def post_result(body: Annotated[ResultPost, Body()], request: Request, c: Shared):
    """Store an agent's report for its job, once, and only from the agent instance that holds the
    job's lease: posting the same result again is harmless."""
    status, out = await store_result(c, body, request.scope.get("edgec.device"))
    return JSONResponse(out, status_code=status)


async def read_body(receive, send, limit: int) -> bytes | None:
    """The request's body, or None when the client is gone or the body is over ``limit`` (413 sent)."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None  # the client is gone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            await send_json(send, 413, too_large_message(limit, False))
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def fast_post_result(c: Collector, scope, receive, send, limit: int) -> None:
    """``POST /v1/results`` as a bare ASGI call (the guard has checked the token): the same
    answers as the route, at a fraction of the CPU."""
    body = await read_body(receive, send, limit)
    if body is None:
        return
    try:
        post = ResultPost.model_validate(strict_json(body))
        status, out = await store_result(c, post, scope.get("edgec.device"))
    except json.JSONDecodeError as exc:
        status, out = 422, {"detail": "invalid JSON body: " + printable(exc.msg)}
    except ValidationError as exc:
        status, out = 422, {"detail": error_list(exc.errors(), ("body",))}
    except HTTPException as exc:
        status, out = exc.status_code, {"detail": exc.detail}
    except RecordRefused as exc:
        status, out = exc.status, {"detail": exc.message}
    except StoreFailed as exc:
        status, out = 503, {"detail": str(exc)}
    data = json.dumps(out).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]})
    await send({"type": "http.response.body", "body": data})


@router.get(API + "/results/{result_id}", tags=["results"], responses=NOT_FOUND)
async def get_result(result_id: JobId, request: Request, c: Shared) -> dict[str, Any]:
    """One stored result with its report document (a device credential reads its own results only)."""
    doc = await c.read(storage.reads.result_doc, result_id)
    me = request.scope.get("edgec.device")
    # another device's result is answered like a missing one: a device cannot enumerate results
    if doc is None or (me is not None and me != doc["device"]):
        raise HTTPException(404, f"no result {result_id}")
    return doc


@router.get(API + "/report", tags=["results"])
async def report_rows(c: Shared, device: Annotated[str | None, Query(max_length=256)] = None,
                      model: Annotated[str | None, Query(max_length=256)] = None,
                      every_run: bool = False) -> dict[str, Any]:
    """The rows of 'edgec report' (latest run per artifact and device unless every_run)."""
    return {"rows": await c.read(report.record_rows, device, model, every_run)}
