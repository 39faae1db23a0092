"""validate_deliverable_address refuses exactly what Django's SMTP backend cannot send to."""

import stringprep

import pytest
from django.core.exceptions import ValidationError
from django.core.mail.message import sanitize_address
from django.core.validators import validate_email

from mailer.validators import BLANK_LOOKING, DEFAULT_IGNORABLE, address_for_display, validate_deliverable_address
from tests.support.addresses import UNDELIVERABLE

DELIVERABLE = {
    "plain": ("shopper@example.com", "shopper@example.com"),
    "IDN domain": ("zoe@bücher.example", "zoe@xn--bcher-kva.example"),
    "IDN domain, capitals": ("zoe@BÜCHER.example", "zoe@xn--bcher-kva.example"),
    "local part of 64 octets": ("a" * 64 + "@example.com", "a" * 64 + "@example.com"),
    "plus and dots": ("first.last+shop@sub.example.co.uk", "first.last+shop@sub.example.co.uk"),
}


@pytest.mark.parametrize("address", UNDELIVERABLE.values(), ids=UNDELIVERABLE.keys())
def test_undeliverable_addresses_are_refused_with_a_readable_message(address):
    with pytest.raises(ValidationError) as refused:
        validate_deliverable_address(address)
    assert refused.value.code == "undeliverable"
    [message] = refused.value.messages
    assert "Error" not in message and "idna" not in message.lower()


@pytest.mark.parametrize(
    "address", ["shopper@exa\u200emple.com", "shopper@exa\uffffmple.com", "shopper@" + "ü" * 60 + ".example"]
)
def test_the_issues_addresses_pass_djangos_email_field_but_not_its_smtp_encoding(address):
    # Why the validator exists: Django's EmailField lets these through, its SMTP backend cannot send them.
    validate_email(address)
    with pytest.raises(UnicodeError):
        sanitize_address(address, "utf-8")


@pytest.mark.parametrize(("address", "encoded"), DELIVERABLE.values(), ids=DELIVERABLE.keys())
def test_deliverable_addresses_pass_and_encode_as_the_backend_sends_them(address, encoded):
    validate_deliverable_address(address)
    assert sanitize_address(address, "utf-8").lower() == encoded.lower()


def test_every_character_idna_drops_or_that_shows_as_nothing_is_refused_by_its_code_point():
    dropped = [code for code in range(0x110000) if stringprep.in_table_b1(chr(code))]
    ignorable = [code for first, last in DEFAULT_IGNORABLE for code in range(first, last + 1)]
    # Why: IDNA 2003 (Django's SMTP backend) silently deletes the first kind from the domain.
    assert "ex\u034fample.com".encode("idna") == b"example.com"
    for code in sorted({*dropped, *ignorable, *BLANK_LOOKING}):
        for address in (f"shopper@ex{chr(code)}ample.com", f"shop{chr(code)}per@example.com"):
            with pytest.raises(ValidationError) as refused:
                validate_deliverable_address(address)
            assert refused.value.messages == [
                f"This address contains an invisible or unusable character (U+{code:04X}). Please type it again."
            ], address


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("zoe@xn--bcher-kva.example", "zoe@bücher.example"),  # what Chromium submits for bücher
        ("zoe@XN--BCHER-KVA.example", "zoe@bücher.example"),
        ("x@sub.xn--bcher-kva.xn--p1ai", "x@sub.bücher.рф"),
        ("zoe@bücher.example", "zoe@bücher.example"),
        ("shopper@example.com", "shopper@example.com"),
        # IDNA 2008's straße.de does not survive IDNA 2003's round trip: shown as stored, not guessed.
        ("a@xn--strae-oqa.de", "a@xn--strae-oqa.de"),
        ("a@xn--zz-.example", "a@xn--zz-.example"),  # not punycode at all
    ],
)
def test_an_address_is_shown_with_its_punycode_labels_in_unicode(stored, shown):
    assert address_for_display(stored) == shown
