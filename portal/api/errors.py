"""API errors: `{"error": {"code", "message", "fields"?}}` with a stable code and status."""

from __future__ import annotations

from flask import jsonify


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 fields: dict[str, str] | None = None, headers: dict[str, str] | None = None,
                 items: list[dict] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.headers = headers or {}
        self.items = items  # a batch's problems, by item index

    def response(self):
        body: dict = {"code": self.code, "message": self.message}
        if self.fields:
            body["fields"] = self.fields
        if self.items:
            body["items"] = self.items
        response = jsonify(error=body)
        response.status_code = self.status
        response.headers.update(self.headers)
        return response


def invalid(fields: dict[str, str]) -> ApiError:
    return ApiError(422, "validation_failed", "Some fields are missing or invalid.", fields)
