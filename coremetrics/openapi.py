"""The OpenAPI schema's common answers: every operation may refuse a request, and says how."""

from __future__ import annotations

from typing import Any

ERRORS = {
    "400": "The request is malformed: the body names each field and its problems.",
    "401": "No API token, or an unknown or revoked one.",
    "403": "The token or role may not do this (a read token writing, a viewer editing).",
    "404": "No such object for this client (another client's objects are never found).",
}


def errors_document(result: dict, generator: Any, request: Any, public: bool) -> dict:
    """drf-spectacular postprocessing hook: the error answers on every operation."""
    error = {
        "description": "",
        "content": {
            "application/json": {"schema": {"type": "object", "additionalProperties": True}}
        },
    }
    for methods in result.get("paths", {}).values():
        for operation in methods.values():
            responses = operation.setdefault("responses", {})
            for code, description in ERRORS.items():
                responses.setdefault(code, {**error, "description": description})
    return result
