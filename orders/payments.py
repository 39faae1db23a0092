"""The payment gateway interface and its sandbox implementation.

``charge(amount, currency, idempotency_key, payment_method) -> charge id``, amounts in integer
minor units. Like a real provider that honours idempotency keys
(https://docs.stripe.com/api/idempotent_requests), the sandbox returns the first outcome for
a key again on every retry, so a job that crashed after charging and retries charges once.
"""

import time
import uuid
from typing import Protocol

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F

from orders.models import PaymentMethod, SandboxCharge, SandboxChargeOutcome

GATEWAY_DB = "gateway"


class PaymentDeclined(Exception):
    """The gateway declined the charge; ``code`` is the provider's decline code (final, not retryable)."""

    def __init__(self, code: str, charge_id: str):
        super().__init__(f"payment declined: {code}")
        self.code = code
        self.charge_id = charge_id


class PaymentTimeout(Exception):
    """The provider did not answer within the call's timeout (seconds); the outcome is unknown.

    The charge may have gone through: the caller retries later with the same idempotency key,
    which returns the same charge instead of a second one.
    """

    def __init__(self, timeout: float):
        super().__init__(f"payment provider did not answer within {timeout:g} s")
        self.timeout = timeout


class PaymentGateway(Protocol):
    def charge(self, *, amount: int, currency: str, idempotency_key: str, payment_method: str, timeout: float) -> str:
        """Charge ``amount`` minor units within ``timeout`` seconds; return the charge id.

        Raise PaymentDeclined (final) or PaymentTimeout (outcome unknown: retry with the same key).
        """


class SandboxGateway:
    """A gateway that keeps its charges in its own table and declines Stripe's test decline method.

    ``PAYMENT_SANDBOX_LATENCY_MS`` (milliseconds) is slept after the charge is recorded and before
    the call returns, as a provider's response in flight: a signal sent during that time lands
    after the charge and before the caller's commit. A latency longer than the call's
    ``timeout`` is a slow provider: the charge is taken, the caller waits ``timeout`` seconds and
    gets PaymentTimeout, as with a real provider whose answer is lost in flight.
    """

    def charge(self, *, amount: int, currency: str, idempotency_key: str, payment_method: str, timeout: float) -> str:
        """Charge ``amount`` (minor units, > 0) of ``currency``; idempotent per ``idempotency_key``.

        Return the charge id (``ch_…``). Raise PaymentDeclined for ``pm_card_chargeDeclined``
        (again on every retry with the same key), PaymentTimeout when the sandbox latency is
        longer than ``timeout`` (seconds; the charge is recorded all the same) and ValueError for
        a non-positive amount.
        """
        if amount <= 0:
            raise ValueError(f"amount must be positive minor units, got {amount}")
        declined = payment_method == PaymentMethod.DECLINED
        try:
            with transaction.atomic(using=GATEWAY_DB):
                record, created = SandboxCharge.objects.using(GATEWAY_DB).get_or_create(
                    idempotency_key=idempotency_key,
                    defaults={
                        "charge_id": f"ch_{uuid.uuid4().hex}",
                        "amount": amount,
                        "currency": currency,
                        "payment_method": payment_method,
                        "outcome": SandboxChargeOutcome.DECLINED if declined else SandboxChargeOutcome.SUCCEEDED,
                        "decline_code": "card_declined" if declined else "",
                    },
                )
        except IntegrityError:  # a concurrent call with the same key won the insert
            record = SandboxCharge.objects.using(GATEWAY_DB).get(idempotency_key=idempotency_key)
            created = False
        if not created:  # a retry with a key the provider has seen: its request log counts it
            SandboxCharge.objects.using(GATEWAY_DB).filter(pk=record.pk).update(requests=F("requests") + 1)
        latency = settings.PAYMENT_SANDBOX_LATENCY_MS / 1000
        if latency > timeout:
            time.sleep(timeout)
            raise PaymentTimeout(timeout)
        if latency:
            time.sleep(latency)
        if record.outcome == SandboxChargeOutcome.DECLINED:
            raise PaymentDeclined(record.decline_code, record.charge_id)
        return record.charge_id


def get_gateway() -> PaymentGateway:
    """Return the configured payment gateway (the sandbox; a real provider plugs in here)."""
    return SandboxGateway()
