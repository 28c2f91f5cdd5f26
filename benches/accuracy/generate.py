#!/usr/bin/env python3
"""Regenerates the labelled corpora the redactor is scored on (benches/accuracy/data/).

Every value and every sentence comes from third-party generators: Faker (several
locales, each provider the redactor claims to cover) and presidio-evaluator's sentence
templates and data generator. This script only places the values, records their spans
and names the kind each generator call produces. Seeded: the same versions
(requirements.txt) give the same files, byte for byte.

    python3 -m venv benches/accuracy/.venv
    benches/accuracy/.venv/bin/pip install -r benches/accuracy/requirements.txt
    benches/accuracy/.venv/bin/python benches/accuracy/generate.py

Output: one JSON object per line, {"text": ..., "key": ..., "spans": [[start, end,
label], ...]} with byte offsets into the UTF-8 text. `key`, when present, is the JSON
key the text is the value of (the redactor reads hints from keys). Labels:

    email, phone, ssn, credit_card, ipv4, ipv6     expected to be found by default
    email_doc      an address at a reserved documentation domain (RFC 2606/6761):
                   left by default, found when documentation domains are redacted
    phone_intl     a number in international form (+CC ...): found when E.164 numbers
                   are on, ignored otherwise
    phone_other    a number in a national format of another country, or bare digits
                   with no phone context: not scored (neither a miss nor a false
                   positive), counted in the report
    credit_card_bare  a Maestro number of 12 to 15 digits with no card context (a
                   word such as "card", or a key): not scored, counted in the report
    ssn_other      another country's national number that a generator calls an SSN
                   (Faker's en_GB `ssn` is a National Insurance number): not scored
"""

import datetime as _datetime
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ["TZ"] = "UTC"
time.tzset()

import faker.providers.date_time as _faker_dates  # noqa: E402
from faker import Faker  # noqa: E402


class _Like(type):
    """`isinstance` against the stand-ins below holds for every real date and time."""

    def __instancecheck__(cls, obj):
        return isinstance(obj, cls.__mro__[1])


class _FixedNow(_datetime.datetime, metaclass=_Like):
    """Faker's dates are relative to the clock: a fixed one keeps the output stable."""

    @classmethod
    def now(cls, tz=None):
        fixed = cls(2026, 1, 1, 12, 0, 0, tzinfo=_datetime.timezone.utc)
        return fixed.astimezone(tz) if tz else fixed.replace(tzinfo=None)


class _FixedToday(_datetime.date, metaclass=_Like):
    @classmethod
    def today(cls):
        return cls(2026, 1, 1)


_faker_dates.datetime = _FixedNow
_faker_dates.dtdate = _FixedToday

SEED = 20261122
OUT = Path(__file__).resolve().parent / "data"

# Locales whose phone numbers are North American (NANP) as Faker writes them.
NANP = {"en_US"}
LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "ja_JP", "es_ES", "it_IT", "pt_BR", "en_IN", "nl_NL"]
CARD_TYPES = [
    "maestro",
    "mastercard",
    "visa16",
    "visa13",
    "visa19",
    "amex",
    "discover",
    "diners",
    "jcb15",
    "jcb16",
]
RESERVED = ("example.com", "example.net", "example.org")
RESERVED_TLDS = ("test", "example", "invalid", "localhost")


def email_label(address: str) -> str:
    domain = address.rsplit("@", 1)[-1].lower()
    if domain in RESERVED or any(domain.endswith("." + d) for d in RESERVED):
        return "email_doc"
    if domain.rsplit(".", 1)[-1] in RESERVED_TLDS:
        return "email_doc"
    return "email"


def phone_label(locale: str, number: str) -> str:
    """The label of a number Faker's phone provider made for `locale`."""
    if locale in NANP:
        digits = sum(c.isdigit() for c in number)
        # Ten bare digits are a phone number only with context (a key or a word):
        # the sentence corpora label them by the text around them, see `bare_phone`.
        if number.isdigit() and digits == 10:
            return "phone_bare"
        return "phone"
    return "phone_intl" if number.startswith("+") else "phone_other"


def value(f: Faker, locale: str, kind: str):
    """One (text, label) of `kind` from Faker's providers for `locale`."""
    if kind == "email":
        v = f.random_element([f.free_email, f.company_email, f.email, f.safe_email])()
        return v, email_label(v)
    if kind == "phone":
        v = f.phone_number()
        return v, phone_label(locale, v)
    if kind == "ssn":
        return f.ssn(), "ssn"
    if kind == "credit_card":
        return f.credit_card_number(card_type=f.random_element(CARD_TYPES)), "credit_card"
    if kind == "ipv4":
        return f.random_element([f.ipv4, f.ipv4_public, f.ipv4_private])(), "ipv4"
    if kind == "ipv6":
        return f.ipv6(), "ipv6"
    raise ValueError(kind)


MAESTRO = ("50", "56", "57", "58", "6", "0604")


def is_maestro(number: str) -> bool:
    """Whether `number` has one of the prefixes of Faker's Maestro provider."""
    return number.startswith(MAESTRO)


class Line:
    """A text being built, with labelled spans in UTF-8 bytes."""

    def __init__(self):
        self.parts = []
        self.size = 0
        self.spans = []

    def add(self, text: str, label: str = None):
        b = len(text.encode())
        if label:
            self.spans.append([self.size, self.size + b, label])
        self.parts.append(text)
        self.size += b

    def record(self, key=None):
        out = {"text": "".join(self.parts), "spans": self.spans}
        if key is not None:
            out["key"] = key
        return out


def faker_sentences(n: int):
    """Values of every kind placed in Faker's own sentences of each locale."""
    kinds = ["email", "phone", "ssn", "credit_card", "ipv4", "ipv6"]
    rng = random.Random(SEED)
    fakers = {}
    for loc in LOCALES:
        f = Faker(loc)
        f.seed_instance(SEED + len(fakers))
        fakers[loc] = f
    for i in range(n):
        loc = LOCALES[i % len(LOCALES)]
        f = fakers[loc]
        kind = kinds[(i // len(LOCALES)) % len(kinds)]
        if kind == "ssn" and loc != "en_US":
            f = fakers["en_US"]
        words = f.sentence(nb_words=rng.randint(4, 14)).split(" ")
        at = rng.randint(0, len(words))
        v, label = value(f, loc if kind == "phone" else "en_US", kind)
        if label == "phone_bare":
            label = "phone_other"  # no phone context in a lorem sentence
        if label == "credit_card" and len(v) <= 15 and is_maestro(v):
            label = "credit_card_bare"  # nor a card context
        line = Line()
        before = " ".join(words[:at])
        line.add(before + (" " if before else ""))
        line.add(v, label)
        after = " ".join(words[at:])
        line.add((" " if after else "") + after)
        yield line.record()


def faker_records(n: int):
    """Faker's values as JSON string values under the name of the provider that made them."""
    rng = random.Random(SEED + 1)
    f = Faker("en_US")
    f.seed_instance(SEED + 1)
    providers = [
        ("phone_number", "phone"),
        ("email", "email"),
        ("free_email", "email"),
        ("company_email", "email"),
        ("ssn", "ssn"),
        ("credit_card_number", "credit_card"),
        ("ipv4", "ipv4"),
        ("ipv6", "ipv6"),
    ]
    for i in range(n):
        key, kind = providers[i % len(providers)]
        if key == "credit_card_number":
            v = f.credit_card_number(card_type=CARD_TYPES[rng.randrange(len(CARD_TYPES))])
            label = "credit_card"
        elif kind == "phone":
            v = f.phone_number()
            label = "phone"  # under a phone key, bare digits count
        elif kind == "email":
            v = getattr(f, key)()
            label = email_label(v)
        else:
            v = getattr(f, key)()
            label = kind
        line = Line()
        line.add(v, label)
        yield line.record(key)
    # Faker's full card text: issuer, name, number and expiry, security code.
    for _ in range(n // 8):
        full = f.credit_card_full(card_type=CARD_TYPES[rng.randrange(len(CARD_TYPES))])
        issuer, name, number_line, code_line = full.strip("\n").split("\n")
        number, expiry = number_line.split(" ")
        line = Line()
        line.add(f"{issuer}\n{name}\n")
        line.add(number, "credit_card")
        line.add(f" {expiry}\n{code_line}\n")
        yield line.record()


def presidio_sentences(n: int, locale: str, countries):
    """presidio-evaluator's templates filled by its data generator: its fake people
    (FakeNameGenerator records) of `countries`, and Faker's providers of `locale` with
    Faker's own phone provider (the evaluator's replacement mixes several countries)."""
    from presidio_evaluator.data_generator import (
        PresidioSentenceFaker,
        presidio_additional_entity_providers,
    )
    from presidio_evaluator.data_generator.faker_extensions import PhoneNumberProviderNew
    from presidio_evaluator.data_generator.faker_extensions.datasets import load_fake_person_df

    people = load_fake_person_df()
    people = people[people["country_code"].isin(countries)].reset_index(drop=True)
    providers = [p for p in presidio_additional_entity_providers if p is not PhoneNumberProviderNew]
    gen = PresidioSentenceFaker(
        locale,
        lower_case_ratio=0.05,
        random_seed=SEED,
        entity_providers=providers,
        base_records=people,
    )
    labels = {
        "EMAIL_ADDRESS": "email",
        "PHONE_NUMBER": "phone",
        "US_SSN": "ssn",
        "CREDIT_CARD": "credit_card",
        "IP_ADDRESS": "ip",
    }
    for s in gen.generate_new_fake_sentences(n):
        text = s.full_text
        spans = []
        for sp in sorted(s.spans, key=lambda sp: sp.start_position):
            kind = labels.get(sp.entity_type)
            if kind is None:
                continue
            v = text[sp.start_position : sp.end_position]
            if kind == "email":
                kind = email_label(v)
            elif kind == "ip":
                kind = "ipv6" if ":" in v else "ipv4"
            elif kind == "ssn" and locale != "en_US":
                kind = "ssn_other"
            elif kind == "phone":
                kind = phone_label(locale, v)
                if kind == "phone_bare":
                    kind = "phone"  # the templates put a phone context around it
            start = len(text[: sp.start_position].encode())
            spans.append([start, start + len(v.encode()), kind])
        yield {"text": text, "spans": spans}


def luhn_ok(d: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(d)):
        x = int(c)
        if i % 2:
            x *= 2
            if x > 9:
                x -= 9
        total += x
    return total % 10 == 0


NAMED = {"version": "version", "build": "build", "ean": "EAN", "isbn": "ISBN"}


def negatives(n: int):
    """Look-alikes from Faker's providers: nothing in them is to be redacted."""
    f = Faker("en_US")
    f.seed_instance(SEED + 2)
    rng = random.Random(SEED + 2)

    def order_id():
        while True:
            d = f.numerify("#" * rng.choice([12, 13, 14, 15, 16, 17, 18, 19]))
            if not luhn_ok(d):
                return d

    makers = [
        ("isbn", lambda: f.isbn13()),
        ("isbn", lambda: f.isbn10()),
        ("ean", lambda: f.ean13()),
        ("ean", lambda: f.ean8()),
        ("latitude", lambda: str(f.latitude())),
        ("longitude", lambda: str(f.longitude())),
        ("coordinates", lambda: "{}, {}".format(*f.local_latlng()[:2])),
        ("sha256", f.sha256),
        ("sha1", f.sha1),
        ("md5", f.md5),
        ("uuid", lambda: str(f.uuid4())),
        ("created_at", lambda: f.date_time().isoformat()),
        ("timestamp", lambda: f.iso8601()),
        ("unix_time", lambda: str(int(f.unix_time()))),
        ("time", f.time),
        ("date", f.date),
        ("version", lambda: f.numerify("%.#.%#.%##")),
        ("build", lambda: f.numerify("#.#.#.#")),
        ("version", lambda: f.numerify("%#.#.%###.%##")),
        ("user_agent", f.user_agent),
        ("order_id", order_id),
        ("expiry", f.credit_card_expire),
        ("cvv", f.credit_card_security_code),
        ("itin", f.itin),
        ("invalid_ssn", f.invalid_ssn),
        ("ein", f.ein),
        ("aba", f.aba),
        ("iban", f.iban),
        ("postcode", f.postcode),
        ("mac_address", f.mac_address),
        ("port", lambda: "{}:{}".format(f.hostname(), f.port_number())),
        ("price", f.pricetag),
        ("amount", lambda: str(f.pydecimal(left_digits=7, right_digits=2))),
        ("number", lambda: str(f.random_number(digits=rng.randint(5, 11)))),
        ("plate", f.license_plate),
        ("url", f.url),
        ("file", f.file_path),
    ]
    for i in range(n):
        key, make = makers[i % len(makers)]
        v = make()
        if rng.random() < 0.5:
            yield {"text": v, "key": key, "spans": []}
        else:
            # A dotted version and a 13-digit product code are told from an address and
            # a card by what names them, in text as under a key: "version 1.2.3.4",
            # "EAN 4006381333931". (A bare dotted quad is an address.)
            if key in NAMED:
                v = f"{NAMED[key]} {v}"
            words = f.sentence(nb_words=rng.randint(3, 10)).rstrip(".").split(" ")
            at = rng.randint(0, len(words))
            text = " ".join(words[:at] + [v] + words[at:]) + "."
            yield {"text": text, "spans": []}


def write(name, rows):
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}.jsonl"
    with path.open("w", encoding="utf-8") as out:
        count = 0
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            count += 1
    print(f"{path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}: {count} lines", file=sys.stderr)


def main():
    Faker.seed(SEED)
    random.seed(SEED)
    write("faker_sentences", faker_sentences(6000))
    write("faker_records", faker_records(4000))
    write("presidio_en_US", presidio_sentences(3000, "en_US", ["US", "CA"]))
    write("presidio_en_GB", presidio_sentences(1000, "en_GB", ["GB"]))
    write("negatives", negatives(2500))


if __name__ == "__main__":
    main()
