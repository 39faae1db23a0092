"""The sandbox gateway: idempotent per key, declines the test decline method, has a latency knob."""

import time

import pytest

from orders.models import SandboxCharge
from orders.payments import PaymentDeclined, PaymentTimeout, SandboxGateway

pytestmark = pytest.mark.django_db(databases=["default", "gateway"])


def test_same_key_gives_the_same_charge():
    gateway = SandboxGateway()
    first = gateway.charge(amount=1200, currency="EUR", idempotency_key="k1", payment_method="pm_card_visa", timeout=5)
    again = gateway.charge(amount=1200, currency="EUR", idempotency_key="k1", payment_method="pm_card_visa", timeout=5)
    assert first == again
    assert SandboxCharge.objects.using("gateway").count() == 1


def test_decline_is_final_for_the_key():
    gateway = SandboxGateway()
    for _ in range(2):
        with pytest.raises(PaymentDeclined) as declined:
            gateway.charge(
                amount=100, currency="EUR", idempotency_key="k2", payment_method="pm_card_chargeDeclined", timeout=5
            )
        assert declined.value.code == "card_declined"


def test_non_positive_amount_is_refused():
    with pytest.raises(ValueError, match="positive"):
        SandboxGateway().charge(
            amount=0, currency="EUR", idempotency_key="k3", payment_method="pm_card_visa", timeout=5
        )


def test_latency_knob_waits_inside_the_charge(settings):
    settings.PAYMENT_SANDBOX_LATENCY_MS = 300
    began = time.monotonic()
    SandboxGateway().charge(amount=100, currency="EUR", idempotency_key="k4", payment_method="pm_card_visa", timeout=5)
    assert time.monotonic() - began >= 0.3
    assert SandboxCharge.objects.using("gateway").filter(idempotency_key="k4").exists()


def test_a_provider_slower_than_the_timeout_is_cut_at_the_timeout_and_keeps_its_charge(settings):
    settings.PAYMENT_SANDBOX_LATENCY_MS = 5000
    began = time.monotonic()
    with pytest.raises(PaymentTimeout):
        SandboxGateway().charge(
            amount=100, currency="EUR", idempotency_key="k5", payment_method="pm_card_visa", timeout=0.2
        )
    assert 0.2 <= time.monotonic() - began < 2
    assert SandboxCharge.objects.using("gateway").filter(idempotency_key="k5").count() == 1
