"""Refuse email addresses that the mailer could never deliver, before anything depends on them.

validate_deliverable_address applies, at the door, the encoding Django's SMTP backend applies when
it sends (IDNA 2003 for the domain, ASCII before the @) and RFC 5321's lengths; address_for_display
shows a stored punycode domain as typed. Documented in
docs/order-flow.md#addresses-the-mailer-could-never-deliver.
"""

import contextlib
import stringprep
import unicodedata

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail.message import sanitize_address
from django.utils.encoding import punycode

# RFC 5321 section 4.5.3.1.1 and 4.5.3.1.2, in octets.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
# RFC 5321 section 4.5.3.1.3: a path, "<" address ">", is at most 256 octets.
MAX_ADDRESS = 256 - 2

# IDNA 2003 (the backend's encoding) maps these deviation characters (UTS #46 section 4) to other
# letters — ß to "ss", ς to "σ" — while IDNA 2008, which registries follow, keeps them: straße.de is
# xn--strae-oqa.de, a different domain from strasse.de. Sent as typed, the mail would reach the
# other one. (The other two deviations, ZWJ and ZWNJ, are refused as invisible.)
DEVIATIONS = "ßς"

# Unicode general categories that nobody types on purpose and that never belong in an address:
# controls, format characters (zero-width and bidi marks such as U+200B, U+200E, U+202E),
# unassigned code points and noncharacters (U+FFFF), private use, surrogates, line separators.
INVISIBLE_CATEGORIES = {"Cc", "Cf", "Cn", "Co", "Cs", "Zl", "Zp"}

# Default_Ignorable_Code_Point, Unicode 15.1 (https://www.unicode.org/Public/15.1.0/ucd/DerivedCoreProperties.txt):
# code points that render as nothing. Python's unicodedata does not expose this property; most of
# them are Cf or Cn (refused above), these ranges also hold letters and marks that are not, such as
# the combining grapheme joiner U+034F, variation selectors and the Hangul fillers U+115F, U+3164.
DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
# Letters and symbols that are drawn blank without being default-ignorable: the braille pattern
# blank U+2800 (and the Hangul fillers, listed here too so that the rule does not hang on one table).
BLANK_LOOKING = {0x115F, 0x1160, 0x2800, 0x3164, 0xFFA0}


def _is_invisible(char: str) -> bool:
    """True for a character a shopper cannot see, or that IDNA would silently drop.

    ``stringprep.in_table_b1`` is RFC 3454 table B.1, "commonly mapped to nothing": nameprep
    (RFC 3491, used by Python's ``idna`` codec and so by Django's SMTP backend) deletes these, so
    ``ex\u034fample.com`` would be sent to ``example.com`` while another string is stored and shown.
    """
    code = ord(char)
    return (
        unicodedata.category(char) in INVISIBLE_CATEGORIES
        or stringprep.in_table_b1(char)
        or code in BLANK_LOOKING
        or any(first <= code <= last for first, last in DEFAULT_IGNORABLE)
    )


def validate_deliverable_address(value: str) -> None:
    """Raise ValidationError (code ``undeliverable``) unless Django's SMTP backend can send to ``value``.

    Django's EmailField accepts any Unicode in the domain (its regex allows U+00A1–U+FFFF) and any
    characters its user regex allows before the @. The SMTP backend then encodes each recipient with
    ``django.core.mail.message.sanitize_address``: the domain through
    ``django.utils.encoding.punycode``, i.e. Python's ``idna`` codec (IDNA 2003, RFC 3490, with
    nameprep, RFC 3491), which raises UnicodeError for a prohibited character (a bidi mark, a
    noncharacter such as U+FFFF) or a label longer than 63 octets once encoded. Such an address
    would pass the form, the order would be charged, and every send would fail.

    ``value`` is a bare address (``local@domain``), as Django's EmailField cleans it. Checks, in
    order, each with a message a shopper can act on:

    - no invisible or unassigned character anywhere, in the local part or the domain: the
      categories in INVISIBLE_CATEGORIES, every code point nameprep maps to nothing (RFC 3454
      table B.1: IDNA would drop it, sending to another domain than the one shown and stored),
      every Default_Ignorable_Code_Point (DEFAULT_IGNORABLE) and the blank-looking letters in
      BLANK_LOOKING (Hangul fillers, braille blank), which IDNA would encode as ``xn--…``;
    - the local part is ASCII: Django's SMTP backend does not speak SMTPUTF8 (RFC 6531) and
      would RFC 2047-encode a non-ASCII local part into ``=?utf-8?…?=@domain``, an address that
      no server delivers;
    - the address encodes exactly as the backend encodes it (``sanitize_address`` and
      ``punycode``: IDNA 2003), so ``zoe@bücher.example`` passes and is sent to
      ``zoe@xn--bcher-kva.example``;
    - no IDNA deviation character (ß, ς: DEVIATIONS) in the domain, which IDNA 2003 would send
      to another domain than IDNA 2008 names;
    - RFC 5321 lengths: local part at most 64 octets, encoded domain at most 255, the whole
      encoded address at most 254 (a path of 256 with its angle brackets).
    """
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        raise ValidationError("Enter an email address of the form name@example.com.", code="undeliverable")
    for char in value:
        if _is_invisible(char):
            raise ValidationError(
                "This address contains an invisible or unusable character (%(code)s). Please type it again.",
                code="undeliverable",
                params={"code": f"U+{ord(char):04X}"},
            )
    if not local.isascii():
        raise ValidationError(
            "The part before the @ may contain only unaccented letters, digits and punctuation: "
            "mail to other characters there cannot be delivered.",
            code="undeliverable",
        )
    if len(local) > MAX_LOCAL_PART:
        raise ValidationError(
            "The part before the @ is longer than %(max)d characters.",
            code="undeliverable",
            params={"max": MAX_LOCAL_PART},
        )
    for char in domain.lower():
        if char in DEVIATIONS:
            raise ValidationError(
                "The part after the @ contains %(char)s, which mail systems do not all read the same "
                "way: the mail could reach another domain. Please check the address.",
                code="undeliverable",
                params={"char": char},
            )
    try:
        sanitize_address(value, settings.DEFAULT_CHARSET)
        encoded_domain = punycode(domain)
    except ValueError:  # UnicodeError is a ValueError: the idna codec's refusals
        raise ValidationError(
            "The part after the @ is not a domain that mail can be sent to. Please check it.",
            code="undeliverable",
        ) from None
    if len(encoded_domain) > MAX_DOMAIN:
        raise ValidationError(
            "The part after the @ is longer than %(max)d characters once encoded.",
            code="undeliverable",
            params={"max": MAX_DOMAIN},
        )
    if len(local) + 1 + len(encoded_domain) > MAX_ADDRESS:
        raise ValidationError(
            "This address is longer than %(max)d characters once encoded.",
            code="undeliverable",
            params={"max": MAX_ADDRESS},
        )


def address_for_display(value: str) -> str:
    """Return ``value`` (``local@domain``) with each ``xn--`` label of its domain shown in Unicode:
    ``zoe@xn--bcher-kva.example`` is ``zoe@bücher.example``; anything else comes back unchanged.

    For showing an address to the shopper who typed it: Chromium submits an ``<input type="email">``
    with its domain already converted to punycode (the HTML standard lets browsers convert between
    the two), so the stored address is ``xn--…`` although the shopper typed and saw Unicode. The
    stored value is what mail goes to and stays as it is. A label is decoded with the same codec
    the mailer encodes with (Python's ``idna``, IDNA 2003), whose ToUnicode refuses a label that
    does not encode back to itself (``xn--strae-oqa``, IDNA 2008's straße): such a label, or one
    that does not decode at all, is shown as it is stored.
    """
    local, at, domain = value.rpartition("@")
    if not at:
        return value
    labels = []
    for label in domain.split("."):
        if label[:4].lower() == "xn--":
            with contextlib.suppress(UnicodeError):
                label = label.lower().encode("ascii").decode("idna")
        labels.append(label)
    return f"{local}@{'.'.join(labels)}"
