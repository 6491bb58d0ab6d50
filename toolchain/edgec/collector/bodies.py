"""Strict JSON bodies: what the record can keep and send back (UTF-8, finite numbers, integers a
64-bit column holds, valid Unicode, at most 64 levels deep), and validation errors that can
always be encoded (the refused input is left out of them)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute

MAX_JSON_DEPTH = 64

# Only a text with a surrogate escape can hold an unpaired surrogate: only then (or when it may
# nest too deep) is the parsed document walked. Numbers are checked as they are parsed (a float
# that overflows is infinite; an integer must fit 64 bits).
_SUSPECT = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
INT64 = 2**63


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _int64(text: str) -> int:
    value = int(text)
    if -INT64 <= value < INT64:
        return value
    raise ValueError(f"{text[:40]}{'...' if len(text) > 40 else ''} is out of the 64-bit integer range")


def _finite(text: str) -> float:
    value = float(text)
    if value - value == 0.0:  # neither infinite nor NaN
        return value
    raise ValueError(f"{text[:40]} is not a finite number")


def _problem(value: Any, where: str, depth: int = 0) -> str | None:
    """Where a parsed JSON value holds a non-finite number, an integer a 64-bit column cannot
    hold, an unpaired surrogate, or nests too deep (None when it does not)."""
    if depth > MAX_JSON_DEPTH:
        return f"{where}: nested deeper than {MAX_JSON_DEPTH} levels"
    if isinstance(value, str):
        return f"{where}: text with an unpaired surrogate (not valid Unicode)" if _SURROGATE.search(value) else None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where}: {value} is not a finite number"
    if isinstance(value, int) and not isinstance(value, bool):
        return None if -INT64 <= value < INT64 else f"{where}: {value} is out of the 64-bit integer range"
    if isinstance(value, dict):
        for key, item in value.items():
            if _SURROGATE.search(key):
                return f"{where}: a key with an unpaired surrogate (not valid Unicode)"
            problem = _problem(item, f"{where}.{key}", depth + 1)
            if problem:
                return problem
    elif isinstance(value, list):
        for i, item in enumerate(value):
            problem = _problem(item, f"{where}[{i}]", depth + 1)
            if problem:
                return problem
    return None


def strict_json(body: bytes) -> Any:
    """A JSON body as the record can keep and send back: UTF-8, finite numbers, 64-bit integers,
    valid Unicode, at most 64 levels deep.

    Raises:
        json.JSONDecodeError: anything else (FastAPI answers it as a 422).
    """
    try:
        doc = _DECODER.decode(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", "", 0) from None
    except RecursionError:
        raise json.JSONDecodeError(f"nested deeper than {MAX_JSON_DEPTH} levels", "", 0) from None
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError):
            raise
        raise json.JSONDecodeError(str(exc), "", 0) from None
    # The full walk only when the text could hold a problem (cheap tests on the bytes first).
    if _SUSPECT.search(body) or body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH:
        problem = _problem(doc, "body")
        if problem:
            raise json.JSONDecodeError(problem, "", 0)
    return doc


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite, parse_int=_int64)


class StrictRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json(await self.body())
        return self._json


class StrictRoute(APIRoute):
    """Routes whose JSON bodies are parsed by :func:`strict_json`."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictRequest(request.scope, request.receive))

        return strict_handler


def printable(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value if math.isfinite(value) else str(value)
    return value if value is None or isinstance(value, bool) else printable(str(value))


def validation_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    """pydantic's errors without the refused input (it may not be encodable: NaN, surrogates)."""
    return error_list(exc.errors())


def error_list(errors: Any, prefix: tuple = ()) -> list[dict[str, Any]]:
    out = []
    for error in list(errors)[:20]:
        item = {"type": printable(error.get("type")),
                "loc": [printable(x) for x in (*prefix, *error.get("loc", ()))],
                "msg": printable(error.get("msg"))}
        ctx = error.get("ctx") or {}
        if "error" in ctx:
            item["msg"] = printable(f"{item['msg']}: {ctx['error']}")
        out.append(item)
    return out
