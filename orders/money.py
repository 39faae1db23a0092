"""Money as the shop charges it: integer minor units, each currency with its ISO 4217 exponent.

Amounts are stored and sent to the gateway as integers in the currency's minor unit
(https://docs.stripe.com/currencies#zero-decimal): 950 EUR is €9.50, 500 JPY is ¥500. Pages,
emails, log lines and the admin all write amounts with format_money; the admin reads typed amounts
with to_minor. Documented in docs/order-flow.md#money.
"""

import functools
import unicodedata
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils.translation import to_locale

from core.errors import ApplicationError

if TYPE_CHECKING:
    from babel import Locale

# Each currency's exponent and the locale's way of writing an amount come from babel's copy of the
# Unicode CLDR (get_currency_precision, format_currency), so this module keeps no table of them. So a
# code is supported only when CLDR's "digits" equal ISO 4217's minor unit: CLDR's digits describe
# usual display, and for some codes they differ from the exponent payment providers charge in (HUF,
# IDR and COP are 0 in CLDR, 2 in ISO 4217). A code joins this tuple only after checking it against
# ISO 4217's list (tests/orders/test_money.py writes the expected exponents down).
SUPPORTED_CURRENCIES: tuple[str, ...] = ("EUR", "USD", "GBP", "CHF", "JPY", "KWD")

# English names, as the admin is, written here rather than read from babel at import: importing
# babel and loading its CLDR data costs about 70 ms, which every process type and every exec probe
# would pay at start. tests/orders/test_money.py checks them against babel's get_currency_name.
CURRENCY_NAMES: dict[str, str] = {
    "EUR": "Euro",
    "USD": "US Dollar",
    "GBP": "British Pound",
    "CHF": "Swiss Franc",
    "JPY": "Japanese Yen",
    "KWD": "Kuwaiti Dinar",
}
# (code, "EUR — Euro") pairs for model and form choices.
CURRENCY_CHOICES: list[tuple[str, str]] = [(code, f"{code} — {CURRENCY_NAMES[code]}") for code in SUPPORTED_CURRENCIES]

# The widest amount column is a PostgreSQL bigint; nothing larger can be stored or charged.
MAX_MINOR = 2**63 - 1

# CLDR's default currencySpacing (UTS #35, Part 3, "Currencies"): where a currency symbol that ends
# (or starts) with a letter meets a digit, a no-break space goes between them ("KWD 1.250", not
# "KWD1.250"). babel 2.19 does not apply it, so format_money does.
_CURRENCY_SPACING = "\u00a0"


class UnsupportedCurrency(ValueError):
    """A currency code that is not in SUPPORTED_CURRENCIES."""


class InvalidAmount(ApplicationError, ValueError):
    """An amount that cannot be charged in its currency (sign, decimals, size); ``message`` says why.

    A ValueError too, for callers that treat any malformed amount alike.
    """


def minor_unit_exponent(code: str) -> int:
    """Return how many decimal places ``code``'s minor unit has (ISO 4217): EUR 2, JPY 0, KWD 3.

    ``code`` is an upper-case ISO 4217 code. The value is CLDR's currency digits, read through
    ``babel.numbers.get_currency_precision``. Raise UnsupportedCurrency for a code not in
    SUPPORTED_CURRENCIES (babel answers 2 for any unknown code, which would silently be wrong).
    """
    if code not in SUPPORTED_CURRENCIES:
        raise UnsupportedCurrency(
            f"unsupported currency {code!r}: the shop charges in {', '.join(SUPPORTED_CURRENCIES)}"
        )
    return _numbers().get_currency_precision(code)


def to_minor(major: Decimal | int, code: str) -> int:
    """Convert a positive amount in major units of ``code`` to integer minor units, exactly.

    ``Decimal("9.50")`` EUR is 950, ``500`` JPY is 500, ``Decimal("1.25")`` KWD is 1250. Trailing
    zeros are fine (``Decimal("500.00")`` JPY is 500); a digit beyond the currency's minor unit is
    never rounded away, since that would charge another amount than the one entered.

    Raise TypeError for a float or another type (binary floats cannot hold 9.50 exactly);
    UnsupportedCurrency for a code not in SUPPORTED_CURRENCIES; InvalidAmount when the amount is
    not finite, not positive, has more decimal places than ISO 4217 gives ``code``, or is larger
    than MAX_MINOR minor units.
    """
    if isinstance(major, bool) or not isinstance(major, Decimal | int):
        raise TypeError(f"an amount must be a Decimal or an int, got {type(major).__name__}")
    exponent = minor_unit_exponent(code)
    major = Decimal(major)
    if not major.is_finite():
        raise InvalidAmount(f"The amount must be a finite number, got {major}.")
    if major <= 0:
        raise InvalidAmount(f"The amount must be positive, got {major}.")
    # adjusted() is the power of ten of the leading digit: checked first, so that an exponent such as
    # 1E+1000000 never becomes a million-digit integer.
    if major.adjusted() + exponent >= len(str(MAX_MINOR)):
        raise InvalidAmount(f"The amount {major} {code} is too large.")
    # Integer arithmetic on the digits, not Decimal arithmetic: the decimal context's 28-digit
    # precision would round 9.5000000000000000000000000001 to 9.50 instead of refusing it.
    _, digits, power = major.as_tuple()
    significant = "".join(map(str, digits)).rstrip("0")
    power += len(digits) - len(significant)
    if power < -exponent:
        if exponent == 0:
            wholes = " or ".join(str(n) for n in (int(major), int(major) + 1) if n > 0)
            raise InvalidAmount(f"{code} has no minor unit: enter a whole amount, such as {wholes}.")
        raise InvalidAmount(f"{code} has at most {exponent} decimal places (ISO 4217); {major} has more.")
    minor = int(significant) * 10 ** (power + exponent)
    if minor > MAX_MINOR:
        raise InvalidAmount(f"The amount {major} {code} is too large.")
    return minor


def to_major(minor: int, code: str) -> Decimal:
    """Return ``minor`` units of ``code`` as an exact Decimal in major units with the currency's decimals.

    950 EUR is ``Decimal("9.50")``, 500 JPY is ``Decimal("500")``, 1250 KWD is ``Decimal("1.250")``.
    Raise TypeError when ``minor`` is not an int; UnsupportedCurrency for a code not in
    SUPPORTED_CURRENCIES.
    """
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError(f"minor units must be an int, got {type(minor).__name__}")
    return Decimal(minor).scaleb(-minor_unit_exponent(code))


def format_money(minor: int, code: str) -> str:
    """Return ``minor`` units of ``code`` written as the shop's locale writes money.

    The locale is settings.LANGUAGE_CODE ("en-us" is babel's ``en_US``): "€12.00", "¥500",
    "$1,234,567.89", "KWD 1.250" (with a no-break space, CLDR's currencySpacing). The number of
    decimals is always the currency's ISO 4217 exponent. Raise TypeError when ``minor`` is not an
    int; UnsupportedCurrency for a code not in SUPPORTED_CURRENCIES.
    """
    amount = to_major(minor, code)
    return _format_major(amount, code, settings.LANGUAGE_CODE)


def warm_up() -> None:
    """Load babel and the CLDR data that format_money and minor_unit_exponent read, for the shop's
    locale (settings.LANGUAGE_CODE) and every SUPPORTED_CURRENCIES code; return None.

    For a process that forks per job (the RQ worker, processes.worker): loaded once in the parent,
    each child inherits it; loaded in each child, it is most of an order job's time (babel's locale
    data, ~100 ms per job on this project's machine, measured by `make bench`).
    """
    for code in SUPPORTED_CURRENCIES:
        format_money(10 ** minor_unit_exponent(code), code)


# A page shows the same few prices again and again (the catalogue: every product on every view);
# babel's formatting is most of the cost of a catalogue page, so each result is kept (bounded).
@functools.lru_cache(maxsize=4096)
def _format_major(amount: Decimal, code: str, language_code: str) -> str:
    """Return ``amount`` (major units of ``code``) as babel writes it for ``language_code``, spaced."""
    locale = _babel_locale(language_code)
    numbers = _numbers()
    text = numbers.format_currency(amount, code, locale=locale, currency_digits=True)
    return _apply_currency_spacing(text, numbers.get_currency_symbol(code, locale=locale))


@functools.cache
def _babel_locale(language_code: str) -> "Locale":
    """Return babel's Locale for a Django language code ("en-us" -> en_US), parsed once per code."""
    from babel import Locale  # on first use, see _numbers

    return Locale.parse(to_locale(language_code))


def _numbers():
    """Return the ``babel.numbers`` module, imported on first use rather than at start-up (about
    70 ms with its CLDR data, paid by every process type and exec probe that never shows money)."""
    import babel.numbers

    return babel.numbers


def _apply_currency_spacing(text: str, symbol: str) -> str:
    """Put a no-break space between ``symbol`` and an adjacent digit when the symbol's edge there is
    neither a symbol nor a space character (CLDR currencyMatch ``[[:^S:]&[:^Z:]]``)."""

    def spaced(char: str) -> bool:
        return unicodedata.category(char)[0] not in "SZ"

    at = text.find(symbol)
    if at < 0 or not symbol:
        return text
    end = at + len(symbol)
    if end < len(text) and text[end].isdigit() and spaced(symbol[-1]):
        return text[:end] + _CURRENCY_SPACING + text[end:]
    if at > 0 and text[at - 1].isdigit() and spaced(symbol[0]):
        return text[:at] + _CURRENCY_SPACING + text[at:]
    return text
