"""Errors raised by the model runtime that callers (the engine, the service) handle specially."""

from __future__ import annotations


class Cancelled(Exception):
    """The caller's `should_cancel()` returned True; raised between denoising or decoder steps."""


class ModelInputError(ValueError):
    """Input that can only be judged at run time (sizes, step counts, token ids); names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self):
        # Exceptions pickle as `cls(*self.args)`, and `args` holds only the formatted text; rebuild from
        # (field, message) so the error crosses process boundaries (Ray actors) as itself.
        return type(self), (self.field, self.message)
