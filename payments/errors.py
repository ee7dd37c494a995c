"""Errors of the payment use cases, shaped like Stripe's error object so the API can return
them as they are (`type`, `code`, `message`, `param`, HTTP status)."""

from __future__ import annotations

from typing import Any


class PaymentError(Exception):
    http_status = 400
    type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
        payment_intent: dict[str, Any] | None = None,
        http_status: int | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.decline_code = decline_code
        self.payment_intent = payment_intent
        if http_status is not None:
            self.http_status = http_status

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "message": self.message}
        for key in ("code", "param", "decline_code", "payment_intent"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        return body


class InvalidRequest(PaymentError):
    pass


class NotFound(PaymentError):
    http_status = 404

    def __init__(self, kind: str, object_id: str, param: str = "id"):
        super().__init__(f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


class CardError(PaymentError):
    http_status = 402
    type = "card_error"


class ChannelError(PaymentError):
    """The channel failed in a way the payer cannot fix; retrying later may work."""

    http_status = 502
    type = "api_error"


class IdempotencyError(PaymentError):
    type = "idempotency_error"
