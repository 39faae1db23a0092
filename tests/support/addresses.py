"""Email addresses the checkout must refuse and the mailer must fail at once."""

# Addresses Django's SMTP backend cannot encode or no server can deliver (mailer.validators):
# the checkout refuses each, and the mailer fails a legacy row holding one at once.
# 18 characters, 61 octets once encoded (a label may have 63).
LONG_CJK_LABEL = "数据库服务器测试邮件地址域名标签长度"
UNDELIVERABLE = {
    "left-to-right mark in the domain": "shopper@exa\u200emple.com",
    "noncharacter U+FFFF in the domain": "shopper@exa\uffffmple.com",
    "label of 60 x ü (64 octets once encoded)": "shopper@" + "ü" * 60 + ".example",
    "zero-width space (IDNA would drop it)": "shopper@exa\u200bmple.com",
    "right-to-left override": "shopper@exa\u202emple.com",
    "soft hyphen": "shopper@ex\u00adample.com",
    "non-ASCII local part (no SMTPUTF8)": "zoë@example.com",
    "local part of 65 octets": "a" * 65 + "@example.com",
    "domain over 255 octets once encoded": "shopper@" + ("ü" * 50 + ".") * 5 + "example",
    "ASCII label of 64 characters": "shopper@" + "a" * 64 + ".example",
    # RFC 5321 4.5.3.1.3: the path "<local@domain>" is at most 256 octets, so the address 254
    # once encoded; 143 characters here (under EmailField's 254), 315 octets encoded.
    "address over 254 octets once encoded": "a" * 64 + "@" + ".".join([LONG_CJK_LABEL] * 4) + ".de",
    # IDNA 2003 (Django's SMTP backend) maps these to ss and σ; IDNA 2008 registries keep them
    # (straße.de is xn--strae-oqa.de, not strasse.de): the mail would go to another domain.
    "sharp s in the domain (IDNA 2003 sends to ss)": "shopper@straße.de",
    "final sigma in the domain (IDNA 2003 sends to σ)": "shopper@ας.gr",
    # IDNA's nameprep maps these to nothing (RFC 3454 table B.1): shown and stored as one domain,
    # sent to another.
    "combining grapheme joiner (IDNA would drop it)": "cgj@ex\u034fample.com",
    "variation selector 16 (IDNA would drop it)": "shopper@ex\ufe0fample.com",
    "Mongolian free variation selector (IDNA would drop it)": "shopper@ex\u180bample.com",
    "Mongolian todo soft hyphen (IDNA would drop it)": "shopper@ex\u1806ample.com",
    "word joiner (IDNA would drop it)": "shopper@ex\u2060ample.com",
    # Blank-looking letters (Default_Ignorable_Code_Point, or drawn blank) that IDNA encodes as xn--.
    "Hangul filler U+3164": "shopper@\u3164example.com",
    "Hangul choseong filler U+115F": "shopper@ex\u115fample.com",
    "Hangul jungseong filler U+1160": "shopper@ex\u1160ample.com",
    "halfwidth Hangul filler U+FFA0": "shopper@ex\uffa0ample.com",
    "braille pattern blank U+2800": "shopper@example\u2800.com",
    "Khmer inherent vowel U+17B4": "shopper@ex\u17b4ample.com",
    "tag character U+E0041": "shopper@example.com\U000e0041",
    "combining grapheme joiner in the local part": "shop\u034fper@example.com",
    "Hangul filler in the local part": "shop\u3164per@example.com",
}
