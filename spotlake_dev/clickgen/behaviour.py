"""Users, sessions and purchase funnels; late, out-of-order and malformed records.

:class:`ClickStream` turns a :class:`StreamConfig` and a rate profile into a
deterministic sequence of records ``(key, value, slot, flags)``:

- ``key``: the user id as UTF-8 bytes (the Kafka message key);
- ``value``: the event as JSON text (see :mod:`spotlake_dev.clickgen.events`);
- ``slot``: the offset in seconds, from the start, at which the record is due;
- ``flags``: :data:`LATE`, :data:`OUT_OF_ORDER` and one of :data:`MALFORMED_FLAGS`, or 0.

Simulation. A fixed population of users (each with a home country and a usual
device) visits the shop. A number of sessions run at once; each event goes to
one of them chosen at random, so sessions interleave as real visitors do. Each
session follows a funnel planned when it starts: a landing page (home, category,
search or promotion, with an external referrer or none), perhaps a search, then
with probability ``funnel.product`` one or more product pages (click on a
product card, then the product's page view), then with ``funnel.cart`` an
``add_to_cart`` and the cart page, then with ``funnel.checkout`` a ``checkout``
and the checkout page, then with ``funnel.purchase`` a ``purchase``. When a
session ends its user rests and another user starts a session.

Event time is ``start_ms`` plus the slot of the record's position in the
schedule, in milliseconds; a *late* record has its event time moved back by a
random 1 ms to ``late_max_seconds``; an *out-of-order* record is held back and
emitted 1 to ``out_of_order_max_delay`` positions after its place (its slot stays
the one it was generated at); a *malformed* record is one of the kinds of
:data:`spotlake_dev.clickgen.events.MALFORMED_KINDS`, built from the session's next
event, which is then still emitted as a valid event later, so the valid records
alone form complete funnels.

Every random choice comes from ``random.Random(seed)`` (the bursty profile uses
its own generator seeded from the same seed), so the same seed, start time and
settings give the same records, however fast they are sent.

Shares. Several processes can generate one stream together (``--workers``):
``ClickStream(config, profile, share=Share(i, n))`` is share ``i`` of ``n``. It
has the users ``u`` with ``u % n == i`` (with the same user ids, devices and
countries as in the whole stream: the population is still drawn from
``random.Random(seed)``), a rate of ``1/n`` of the profile's (see
:class:`~spotlake_dev.clickgen.rate.RateShare`) and ``1/n`` of the sessions; its
sessions and events come from a generator seeded with the seed and ``i`` of
``n``, and its event ids differ from every other share's in their first 12 hex
digits. So each user's events come from one share, in order; the same seed and
``n`` give the same records in each share; and no two shares of a seed have an
event id in common. ``Share(0, 1)`` (the default) is the whole stream.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from math import floor  # int(x) for the x >= 0 of the hot paths here, and about twice as fast

from spotlake.errors import ConfigError
from spotlake_dev.clickgen.events import (
    BAD_JSON,
    DEVICES,
    MALFORMED_KINDS,
    MISSING_FIELD,
    SCHEMA_VERSION,
    UNKNOWN_SCHEMA_VERSION,
    WRONG_TYPE,
    encode,
    malform,
)
from spotlake_dev.clickgen.rate import ConstantRate, RateProfile, RateShare

Record = tuple[bytes, str, float, int]

LATE = 1
OUT_OF_ORDER = 2
MALFORMED_FLAGS: dict[str, int] = {
    BAD_JSON: 4,
    MISSING_FIELD: 8,
    WRONG_TYPE: 16,
    UNKNOWN_SCHEMA_VERSION: 32,
}
MALFORMED = 4 | 8 | 16 | 32

# Mean think time of a visitor between two events; with the target rate it sets
# how many sessions run at once (rate * think time, at most the number of users).
THINK_SECONDS = 15.0

CATEGORIES: tuple[str, ...] = (
    "shoes",
    "jackets",
    "books",
    "toys",
    "kitchen",
    "garden",
    "phones",
    "laptops",
    "audio",
    "games",
    "sports",
    "beauty",
)
SEARCH_TERMS: tuple[str, ...] = (
    "running shoes",
    "rain jacket",
    "headphones",
    "usb c cable",
    "coffee grinder",
    "lego",
    "yoga mat",
    "laptop stand",
    "board game",
    "novel",
    "garden hose",
    "phone case",
    "face cream",
    "tent",
    "kettle",
    "gaming mouse",
)
PROMOTIONS: tuple[str, ...] = ("spring-sale", "black-friday", "free-shipping", "new-arrivals")
PRODUCT_COUNT = 2_000
PRODUCT_DETAILS: tuple[str, ...] = ("image-gallery", "reviews-tab", "size-guide", "share-button")

# (value, weight) tables; None is a direct visit (no referrer).
REFERRERS: tuple[tuple[str | None, int], ...] = (
    (None, 38),
    ("https://www.google.com/", 35),
    ("https://www.bing.com/", 5),
    ("https://www.facebook.com/", 8),
    ("https://www.instagram.com/", 6),
    ("https://t.co/", 3),
    ("https://newsletter.example.com/", 5),
)
COUNTRIES: tuple[tuple[str, int], ...] = (
    ("US", 30),
    ("GB", 9),
    ("DE", 9),
    ("FR", 7),
    ("IN", 8),
    ("BR", 5),
    ("JP", 5),
    ("CA", 4),
    ("ES", 4),
    ("IT", 4),
    ("NL", 3),
    ("PL", 3),
    ("SE", 2),
    ("AU", 3),
    ("MX", 2),
    ("KR", 2),
)
DEVICE_WEIGHTS: tuple[tuple[str, int], ...] = (("mobile", 55), ("desktop", 38), ("tablet", 7))
LANDINGS: tuple[tuple[str, int], ...] = (("home", 40), ("category", 30), ("search", 15), ("promotion", 15))
USUAL_DEVICE_SHARE = 0.85  # a session uses the user's usual device this often
SEARCH_SHARE = 0.2  # sessions that search after landing (unless they landed on search)
MORE_PRODUCTS = 0.45  # chance of viewing one more product, repeatedly
MAX_PRODUCTS = 8
DETAIL_SHARE = 0.3  # product views followed by a click on a detail element


def _table(pairs: tuple[tuple[object, int], ...]) -> tuple:
    """A lookup table where each value appears ``weight`` times: pick with one random()."""
    return tuple(value for value, weight in pairs for _ in range(weight))


def _check_fraction(name: str, flag: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{name} {value!r} is not a fraction between 0 and 1; fix: pass {flag} 0.05 (5%) or similar")


@dataclass(frozen=True)
class Funnel:
    """Chance of going on to each funnel stage, given the one before.

    ``product``: landing -> a product page; ``cart``: product -> add to cart;
    ``checkout``: cart -> checkout; ``purchase``: checkout -> purchase.
    """

    product: float = 0.62
    cart: float = 0.28
    checkout: float = 0.55
    purchase: float = 0.70

    def __post_init__(self) -> None:
        for stage in ("product", "cart", "checkout", "purchase"):
            _check_fraction(f"funnel {stage} probability", f"--funnel-{stage}", getattr(self, stage))


@dataclass(frozen=True)
class StreamConfig:
    """What to simulate; every field has a usable default except, for determinism, ``start_ms``.

    ``start_ms`` is the event time of the first slot (epoch ms UTC); ``None`` means
    the moment the stream is created. ``sessions`` is how many sessions run at
    once; ``None`` means ``rate * THINK_SECONDS`` capped at ``users``.
    """

    seed: int = 0
    start_ms: int | None = None
    users: int = 10_000
    sessions: int | None = None
    funnel: Funnel = field(default_factory=Funnel)
    late_fraction: float = 0.02
    late_max_seconds: float = 300.0
    out_of_order_fraction: float = 0.01
    out_of_order_max_delay: int = 10
    malformed_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int):
            raise ConfigError(f"seed {self.seed!r} is not an integer; fix: pass --seed 42 or another integer")
        if not (isinstance(self.users, int) and self.users >= 1):
            raise ConfigError(f"users {self.users!r} is not a positive integer; fix: pass --users 10000 or similar")
        if self.sessions is not None and not (isinstance(self.sessions, int) and 1 <= self.sessions <= self.users):
            raise ConfigError(
                f"sessions {self.sessions!r} is not between 1 and the number of users ({self.users}); "
                "fix: pass --sessions no larger than --users, or leave it out"
            )
        _check_fraction("late fraction", "--late-fraction", self.late_fraction)
        _check_fraction("out-of-order fraction", "--out-of-order-fraction", self.out_of_order_fraction)
        _check_fraction("malformed fraction", "--malformed-fraction", self.malformed_fraction)
        if not (isinstance(self.late_max_seconds, (int, float)) and self.late_max_seconds > 0):
            raise ConfigError(
                f"late max seconds {self.late_max_seconds!r} is not positive; fix: pass --late-max-seconds 300 or similar"
            )
        if not (isinstance(self.out_of_order_max_delay, int) and self.out_of_order_max_delay >= 1):
            raise ConfigError(
                f"out-of-order max delay {self.out_of_order_max_delay!r} "
                "is not a positive number of positions; "
                "fix: pass --out-of-order-max-delay 10 or similar"
            )


def check_limits(count: int | None, duration: float | None) -> None:
    """Raise :class:`ConfigError` unless ``count`` and ``duration`` are None or usable limits of a stream."""
    if count is not None and not (isinstance(count, int) and count >= 0):
        raise ConfigError(f"count {count!r} is not a whole number of events; fix: pass --count 100000 or similar")
    if duration is not None and not duration > 0:
        raise ConfigError(f"duration {duration!r} s is not positive; fix: pass --duration 60 or similar")


@dataclass(frozen=True)
class Share:
    """Share ``index`` (0-based) of ``of`` equal shares of a stream; see the module documentation."""

    index: int = 0
    of: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.of, int) and self.of >= 1):
            raise ConfigError(f"workers {self.of!r} is not a positive integer; fix: pass --workers 1 (one process) or more")
        if not (isinstance(self.index, int) and 0 <= self.index < self.of):
            raise ConfigError(
                f"worker index {self.index!r} is not between 0 and {self.of - 1}; "
                f"fix: pass an index from 0 to {self.of - 1} for {self.of} workers"
            )

    def part(self, total: int) -> int:
        """This share's part of ``total`` (events, sessions): the parts of all shares add up to ``total``,
        and the first ``total % of`` shares have one more than the others."""
        return total // self.of + (self.index < total % self.of)

    def users(self, users: int) -> range:
        """The user numbers of this share: ``u`` with ``u % of == index``."""
        return range(self.index, users, self.of)


def _event_id_prefix(rng: random.Random, share: int = 0) -> str:
    """The first 24 characters of every event id of a stream: a version-4 UUID layout.

    The last 12 hex digits are a counter, so ids are unique within a stream and,
    with 74 random bits in the prefix, distinct between seeds. ``share`` (less than
    2**48) is XORed into the first 12 hex digits, so the shares of one seed have
    prefixes that differ there, and share 0 has the whole stream's prefix.
    """
    text = f"{rng.getrandbits(128) ^ (share << 80):032x}"
    return f"{text[:8]}-{text[8:12]}-4{text[13:16]}-{'89ab'[int(text[16], 16) & 3]}{text[17:20]}-"


def _action(event_type: str, page: str, element: str) -> str:
    """The fragment of an event from ``event_type`` to the ``"referrer":`` key (page, element: JSON)."""
    return f',"event_type":"{event_type}","page":{page},"element":{element},"referrer":'


class _Page:
    """A page of the shop as pre-encoded JSON fragments (see :class:`_Shop`)."""

    __slots__ = ("click", "search", "text", "view")

    def __init__(self, path: str) -> None:
        self.text = encode(path)
        self.view = _action("page_view", self.text, "null")
        self.search = _action("search", self.text, encode("search-box"))
        # a click on this page up to its element (a product card or detail, with the referrer key)
        self.click = f',"event_type":"click","page":{self.text},"element":'


class _Product:
    """A product's page and the fragments of the actions on it."""

    __slots__ = ("add_to_cart", "card", "page")

    def __init__(self, index: int) -> None:
        self.page = _Page(f"/product/p{index:05d}")
        # the element of a click on the product's card (on another page), with the referrer key
        self.card = f'{encode(f"product-card:p{index:05d}")},"referrer":'
        self.add_to_cart = _action("add_to_cart", self.page.text, encode(f"add-to-cart:p{index:05d}"))


class _Shop:
    """The catalogue and the users as pre-encoded JSON fragments, built once per stream.

    A valid event's JSON text after its ``event_time`` value is the concatenation of

    - a session's head: ``,"user_id":"u0000014","session_id":"796f74adfaf55496","session_seq":``;
    - the step's position in the session: ``4``;
    - the step's action: ``,"event_type":"page_view","page":"/product/p01350","element":null,"referrer":``;
    - the step's referrer: ``"/product/p00224"`` (or ``null``);
    - a session's tail: ``,"device":"mobile","country":"IN"}``.

    Every value in these fragments is encoded with :func:`~spotlake_dev.clickgen.events.encode`
    (JSON escaping) or, for the device, country and hex session id, comes from a fixed
    alphabet that needs none, so only whole fragments are put together per event.
    """

    def __init__(self, rng: random.Random, users: int) -> None:
        self.referrers = tuple(encode(value) for value in _table(REFERRERS))
        self.landings = _table(LANDINGS)
        self.home = _Page("/")
        self.categories = tuple(_Page(f"/category/{name}") for name in CATEGORIES)
        self.promotions = tuple(_Page(f"/promo/{name}") for name in PROMOTIONS)
        self.searches = tuple(_Page(f"/search?q={term.replace(' ', '+')}") for term in SEARCH_TERMS)
        self.landing_pages = {"category": self.categories, "search": self.searches, "promotion": self.promotions}
        # the element of a click on a product detail, with the referrer key
        self.details = tuple(f'{encode(name)},"referrer":' for name in PRODUCT_DETAILS)
        self.cart_page = _Page("/cart")
        self.checkout = _action("checkout", self.cart_page.text, encode("checkout-button"))
        self.checkout_page = _Page("/checkout")
        self.purchase = _action("purchase", self.checkout_page.text, encode("place-order"))
        # Product i has popularity ~ 1/(i+1)^0.9: it appears that often in `popular`.
        products = [_Product(i) for i in range(PRODUCT_COUNT)]
        weights = [1.0 / (i + 1) ** 0.9 for i in range(PRODUCT_COUNT)]
        total = sum(weights)
        self.popular = tuple(
            product
            for product, weight in zip(products, weights, strict=True)
            for _ in range(max(1, round(weight / total * 20_000)))
        )
        devices = _table(DEVICE_WEIGHTS)
        countries = _table(COUNTRIES)
        rnd = rng.random
        self.user_keys: list[bytes] = []
        self.user_heads: list[str] = []  # the session head up to the session id's value
        self.user_devices: list[str] = []
        self.user_countries: list[str] = []
        for index in range(users):
            user_id = f"u{index:07d}"
            self.user_keys.append(user_id.encode())
            self.user_heads.append(f',"user_id":{encode(user_id)},"session_id":"')
            self.user_devices.append(devices[int(rnd() * len(devices))])
            self.user_countries.append(countries[int(rnd() * len(countries))])

    def landing_page(self, landing: str, rnd: Callable[[], float]) -> _Page:
        """A page of the ``landing`` kind (home, category, search or promotion)."""
        if landing == "home":
            return self.home
        pages = self.landing_pages[landing]
        return pages[floor(rnd() * len(pages))]

    def journey(self, rng: random.Random, funnel: Funnel) -> list[tuple[str, str]]:
        """The events of one session: (action, referrer) JSON fragments, see :class:`_Shop`."""
        rnd = rng.random
        steps: list[tuple[str, str]] = []
        add = steps.append

        referrer = self.referrers[floor(rnd() * len(self.referrers))]
        landing = self.landings[floor(rnd() * len(self.landings))]
        page = self.landing_page(landing, rnd)
        add((page.view, referrer))
        if landing != "search" and rnd() < SEARCH_SHARE:
            add((page.search, referrer))
            referrer, page = page.text, self.searches[floor(rnd() * len(self.searches))]
            add((page.view, referrer))
        if rnd() >= funnel.product:
            return steps
        views = 1
        while views < MAX_PRODUCTS and rnd() < MORE_PRODUCTS:
            views += 1
        popular = self.popular
        for _ in range(views):
            product = popular[floor(rnd() * len(popular))]
            add((page.click + product.card, referrer))
            referrer, page = page.text, product.page
            add((page.view, referrer))
            if rnd() < DETAIL_SHARE:
                add((page.click + self.details[floor(rnd() * len(self.details))], referrer))
        if rnd() >= funnel.cart:
            return steps
        add((product.add_to_cart, referrer))
        referrer, page = page.text, self.cart_page
        add((page.view, referrer))
        if rnd() >= funnel.checkout:
            return steps
        add((self.checkout, referrer))
        referrer, page = page.text, self.checkout_page
        add((page.view, referrer))
        if rnd() >= funnel.purchase:
            return steps
        add((self.purchase, referrer))
        return steps


# session_seq values as text: cheaper to look up than to format (a session has at most
# 8 + 3 * MAX_PRODUCTS = 32 steps: landing, search and results, click, view and detail
# per product, cart, checkout and purchase).
_SEQ_TEXT: tuple[str, ...] = tuple(str(n) for n in range(256))

# Event ids end in a 12-hex-digit counter. Formatting it per event (f"{n:012x}") is a
# noticeable part of the cost of an event, so the emit loop takes the last three digits
# from this table and formats the other nine only every 4,096 events.
_HEX3: tuple[str, ...] = tuple(f"{n:03x}" for n in range(4096))


class ClickStream:
    """A deterministic stream of click records; see the module documentation."""

    def __init__(
        self,
        config: StreamConfig | None = None,
        profile: RateProfile | RateShare | None = None,
        share: Share | None = None,
    ) -> None:
        """``profile`` is the schedule of the whole stream; with ``share``, :attr:`profile` becomes the share's."""
        self.config = config or StreamConfig()
        self.share = share or Share()
        whole = profile or ConstantRate(100.0)
        of = self.share.of
        if of > 1 and isinstance(whole, RateShare):
            raise ConfigError("a share of a stream cannot be shared again; fix: pass the whole stream's profile")
        self.profile: RateProfile | RateShare = whole if of == 1 else RateShare(whole, self.share.index, of)
        self.start_ms = self.config.start_ms if self.config.start_ms is not None else int(time.time() * 1000)
        users = len(self.share.users(self.config.users))
        if users == 0:
            raise ConfigError(
                f"--users {self.config.users} is fewer than --workers {of}: every worker needs users of its own; "
                f"fix: pass --users {of} or more, or --workers {self.config.users} or fewer"
            )
        if of > 1 and self.config.sessions and self.config.sessions < of:
            raise ConfigError(
                f"--sessions {self.config.sessions} is fewer than --workers {of}: every worker runs sessions of its "
                f"own; fix: pass --sessions {of} or more, or --workers {self.config.sessions} or fewer"
            )
        # A share runs its part of --sessions, or rate x think time for its part of the rate.
        wanted = self.share.part(self.config.sessions) if self.config.sessions else math.ceil(self.profile.rate * THINK_SECONDS)
        self.sessions = min(users, max(1, wanted))

    def records(self, count: int | None = None, duration: float | None = None) -> Iterator[Record]:
        """Records until ``count`` are out or the schedule reaches ``duration`` seconds.

        With neither, the stream is endless. Records held back to be out of order
        are emitted before the stream ends, so exactly ``count`` come out. The
        users and first sessions are set up before this returns, so the first
        record comes without delay.
        """
        check_limits(count, duration)
        config = self.config
        share = self.share
        rng = random.Random(config.seed)
        shop = _Shop(rng, config.users)
        funnel = config.funnel
        prefix = _event_id_prefix(rng, share.index)
        if share.of > 1:
            # Every share has the whole population above; its sessions and events are its own.
            rng = random.Random(f"{config.seed}:share {share.index} of {share.of}")
        rnd = rng.random

        user_heads, user_devices, user_countries = shop.user_heads, shop.user_devices, shop.user_countries
        seq_text = _SEQ_TEXT

        def start_session(user: int) -> list[str]:
            """A new session of ``user``: the JSON text of its events after ``event_time``, next one last."""
            device = user_devices[user] if rnd() < USUAL_DEVICE_SHARE else DEVICES[floor(rnd() * len(DEVICES))]
            # 16 hex digits, the same text as f"{bits:016x}" but about twice as fast
            session_id = rng.getrandbits(64).to_bytes(8, "big").hex()
            head = f'{user_heads[user]}{session_id}","session_seq":'
            tail = f',"device":"{device}","country":"{user_countries[user]}"}}'
            steps = [
                f"{head}{seq_text[seq]}{action}{referrer}{tail}"
                for seq, (action, referrer) in enumerate(shop.journey(rng, funnel))
            ]
            steps.reverse()
            return steps

        # Running session i is user session_users[i]'s (message key session_keys[i]), with the
        # events session_steps[i] still to come. Parallel lists rather than session objects:
        # the emit loop then touches less memory per event, which matters with thousands of sessions.
        resting = list(share.users(config.users))
        session_users: list[int] = []
        session_keys: list[bytes] = []
        session_steps: list[list[str]] = []
        for _ in range(self.sessions):
            pick = int(rnd() * len(resting))
            user = resting[pick]
            resting[pick] = resting[-1]
            resting.pop()
            session_users.append(user)
            session_keys.append(shop.user_keys[user])
            session_steps.append(start_session(user))

        return self._emit(
            rng, shop.user_keys, session_users, session_keys, session_steps, resting, start_session, prefix, count, duration
        )

    def _emit(
        self,
        rng: random.Random,
        user_keys: list[bytes],
        session_users: list[int],
        session_keys: list[bytes],
        session_steps: list[list[str]],
        resting: list[int],
        start_session: Callable[[int], list[str]],
        prefix: str,
        count: int | None,
        duration: float | None,
    ) -> Iterator[Record]:
        # The hot loop: everything it uses is a local, and a valid event is one string put
        # together from its id, its time and its session's next step.
        config = self.config
        rnd = rng.random
        late_p = config.late_fraction
        late_ms = int(config.late_max_seconds * 1000)
        ooo_p = config.out_of_order_fraction
        ooo_delay = config.out_of_order_max_delay
        bad_p = config.malformed_fraction
        # bools, not the fractions, in the tests below: a bool is the interpreter's fast case
        any_late, any_ooo, any_bad = late_p > 0, ooo_p > 0, bad_p > 0
        kinds = MALFORMED_KINDS
        kind_flags = MALFORMED_FLAGS
        start_ms = self.start_ms
        opening = f'{{"schema_version":{SCHEMA_VERSION},"event_id":"{prefix}'
        hex3 = _HEX3
        limit = count if count is not None else -1
        end = duration if duration is not None else math.inf
        next_slot = self.profile.offsets().__next__
        sessions = len(session_steps)
        held: list[tuple[int, int, Record]] = []
        push, pop = heapq.heappush, heapq.heappop
        # Every record made so far has been emitted or is held, so `made` alone says when
        # `count` records are out (the held ones are emitted after the loop).
        made = 0
        # The event id of record `made` is id_head + hex3[low]: id_head ends with the counter's
        # first nine hex digits, low is made % 4096.
        id_head = f"{opening}{0:09x}"
        low = 0
        while made != limit:
            slot = next_slot()
            if slot >= end:
                break
            index = floor(rnd() * sessions)
            steps = session_steps[index]
            key = session_keys[index]
            event_time = start_ms + floor(slot * 1000.0)
            flags = 0
            if any_late and rnd() < late_p:
                event_time -= 1 + floor(rnd() * late_ms)
                flags = LATE
            value = f'{id_head}{hex3[low]}","event_time":{event_time}{steps[-1]}'
            if any_bad and rnd() < bad_p:
                kind = kinds[floor(rnd() * len(kinds))]
                value = malform(value, kind, rng)
                flags |= kind_flags[kind]
            else:
                steps.pop()
                if not steps:
                    user = session_users[index]
                    pick = floor(rnd() * (len(resting) + 1))
                    if pick < len(resting):  # someone else visits; this user rests
                        resting[pick], user = user, resting[pick]
                        session_users[index] = user
                        session_keys[index] = user_keys[user]
                    session_steps[index] = start_session(user)
            made += 1
            low += 1
            if low == 4096:
                low = 0
                id_head = f"{opening}{made >> 12:09x}"
            if any_ooo and rnd() < ooo_p:
                push(held, (made + 1 + floor(rnd() * ooo_delay), made, (key, value, slot, flags | OUT_OF_ORDER)))
            else:
                yield key, value, slot, flags
            while held and held[0][0] <= made:
                yield pop(held)[2]
        while held:
            yield pop(held)[2]
