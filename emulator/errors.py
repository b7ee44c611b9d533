"""Batch's error shape: every deterministic failure is a 4xx with a Batch error code."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

MESSAGES: dict[str, tuple[int, str]] = {
    "PoolExists": (409, "The specified pool already exists."),
    "PoolNotFound": (404, "The specified pool does not exist."),
    "PoolBeingDeleted": (
        409,
        "The specified pool has been marked for deletion and is being reclaimed.",
    ),
    "PoolNotResizing": (409, "The specified pool is not resizing."),
    "PoolResizing": (409, "The specified pool is currently resizing."),
    "JobExists": (409, "The specified job already exists."),
    "JobNotFound": (404, "The specified job does not exist."),
    "JobBeingDeleted": (
        409,
        "The specified job has been marked for deletion and is being garbage collected.",
    ),
    "JobCompleted": (409, "The specified job is already in a completed state."),
    "JobNotActive": (409, "The specified job is not in an active state."),
    "JobBeingTerminated": (409, "The specified job is being terminated."),
    "TaskExists": (409, "The specified task already exists."),
    "TaskNotFound": (404, "The specified task does not exist."),
    "TaskCompleted": (409, "The specified task is already in a completed state."),
    "TaskDependenciesNotSpecifiedOnJob": (
        409,
        "The specified job does not have task dependencies enabled.",
    ),
    "NodeNotFound": (404, "The specified node does not exist."),
    "NodeUserExists": (409, "The specified node user already exists."),
    "NodeUserNotFound": (404, "The specified node user does not exist."),
    "NodeStateConflict": (409, "The node is not in a state that allows this operation."),
    "FileNotFound": (404, "The specified file does not exist."),
    "InvalidRange": (416, "The specified range is not satisfiable."),
    "AutoScaleNotEnabled": (409, "Autoscale is not enabled on the specified pool."),
    "AutoScaleFormulaError": (400, "The autoscale formula is invalid."),
    "AutoScaleNotSupported": (
        409,
        "Autoscale formulas are not supported by this emulator build.",
    ),
    "InvalidPropertyValue": (
        400,
        "The value provided for one of the properties in the request body is invalid.",
    ),
    "MissingRequiredProperty": (400, "A required property was not specified in the request body."),
    "InvalidQueryParameterValue": (
        400,
        "The value for one of the query parameters specified in the request URI is invalid.",
    ),
    "InvalidRequestBody": (400, "The specified Request Body is not syntactically valid."),
    "RequestBodyTooLarge": (
        413,
        "The request body is too large and exceeds the maximum permissible limit.",
    ),
    "AuthenticationFailed": (
        403,
        "Server failed to authenticate the request. Make sure the value of Authorization "
        "header is formed correctly including the signature.",
    ),
    "MissingRequiredHeader": (400, "A required header was not specified."),
    "UnsupportedApiVersion": (400, "The specified api version is not supported."),
    "OperationNotSupported": (400, "The requested operation is not supported by the emulator."),
    "ResourceNotFound": (404, "The specified resource does not exist."),
    "ServerBusy": (
        503,
        "The server is currently unable to receive requests. Please retry your request.",
    ),
    "InternalError": (
        500,
        "Server encountered an internal error. Please try again after some time.",
    ),
    "TooManyRequests": (429, "The server is busy. Please retry after the interval in Retry-After."),
}


ERROR_ENTITY = "Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element"


class BatchError(Exception):
    """An error the service answers with; `values` become Batch's key/value detail list."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        status: int | None = None,
        values: dict[str, str] | None = None,
    ) -> None:
        default_status, default_message = MESSAGES.get(code, (400, code))
        self.code = code
        self.status = status or default_status
        self.message = message or default_message
        self.values = values or {}
        super().__init__(f"{code}: {self.message}")

    def body(self, endpoint: str) -> dict[str, Any]:
        return error_body(endpoint, self.code, self.message, self.values)


def error_body(
    endpoint: str, code: str, message: str, values: dict[str, str] | None = None
) -> dict[str, Any]:
    """The JSON Batch sends: message.value carries RequestId and Time lines like the service."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
    body: dict[str, Any] = {
        "odata.metadata": f"{endpoint}/$metadata#{ERROR_ENTITY}",
        "code": code,
        "message": {"lang": "en-US", "value": f"{message}\nRequestId:{uuid.uuid4()}\nTime:{stamp}"},
    }
    if values:
        body["values"] = [{"key": k, "value": v} for k, v in values.items()]
    return body


def invalid(prop: str, reason: str) -> BatchError:
    """400 InvalidPropertyValue naming the property, as Batch does."""
    return BatchError("InvalidPropertyValue", values={"PropertyName": prop, "Reason": reason})


def missing(prop: str) -> BatchError:
    return BatchError("MissingRequiredProperty", values={"PropertyName": prop})
