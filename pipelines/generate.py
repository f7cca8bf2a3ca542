"""Realistic raw order exports for `loyalty generate` (SPEC §2, §4, §7).

`generate(out_dir, orders, customers=None, seed=42)` writes Brevo, BonifiQ and eSputnik exports, in the exact
shapes of the vendor documents (see /work/shared/seeds), under

    out_dir/<source>/<YYYY>/<YYYY-MM-DD>-orders.<ext>            first records of orders (of that period)
    out_dir/<source>/<YYYY>/<YYYY-MM-DD>-updates.<ext>           later records: status updates and re-sends
    out_dir/<source>/<YYYY>/<YYYY-MM-DD>-orders-<id>.json        a single order object (Brevo, BonifiQ)
    out_dir/<source>/<YYYY>/<YYYY-MM-DD>-updates-<id>-<status>.json   a single Brevo status update

where `<YYYY-MM-DD>` is the first day of the file's period (a day, an ISO week or a month, chosen from the
volume so that files are neither tiny nor huge). Lexicographic path order is chronological: every record lands
in the file of the period of its own time, and an update always sorts after the file of the order it updates.

Everything is drawn as whole numpy arrays from `np.random.default_rng(seed)` and rendered to JSON / CSV text
with polars string expressions, so the output is byte-identical for the same arguments and a million orders
take well under a minute on two cores. A Python loop only touches the ~1 % bad records and the handful of
single-object files.

CSV files have one column per dotted field (`billing.city`, `Customer.Email`, ...), an empty cell for an
absent field, and JSON text in the list columns `products` / `Products` / `items` and BonifiQ `Metadatas`.
Read CSV cells as text: CPF documents and phone numbers are digit strings that can start with 0.

Bad records (SPEC §4) are extra records with ids of their own (or, for the two Brevo update cases, updates
that change nothing), each bad for exactly one reason code and for no reason listed before it; their intended
reason and position are returned in `GenerateSummary.bad_records` / `bad_record_locations`.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl

from pipelines.schemas import REASON_CODES, SOURCES

__all__ = ["KIND_EXT", "REASON_CODES", "SOURCES", "BadRecord", "GenerateSummary", "generate"]

BREVO, BONIFIQ, ESPUTNIK = 0, 1, 2  # positions in SOURCES

# File kinds (SPEC §2) and their extensions.
KIND_EXT = {
    "ndjson": "ndjson",
    "jsonl": "jsonl",
    "csv": "csv",
    "json_object": "json",
    "json_array": "json",
    "json_envelope": "json",
    "ndjson_gz": "ndjson.gz",
    "csv_gz": "csv.gz",
    "json_array_gz": "json.gz",
    "json_envelope_gz": "json.gz",
}
# Non-bulk kinds, each given to one period of its source (the rest are ndjson and csv).
SPECIAL_KINDS = {
    "brevo": ("json_envelope", "json_array", "ndjson_gz", "csv_gz", "jsonl", "json_array_gz"),
    "bonifiq": ("json_array", "jsonl", "csv_gz", "ndjson_gz", "json_array_gz"),
    "esputnik": ("json_envelope", "json_envelope_gz", "ndjson_gz", "csv_gz", "jsonl"),
}
SINGLES = {"brevo": (3, 2), "bonifiq": (3, 0), "esputnik": (0, 0)}  # single-object files: (orders, updates)

DEFAULT_END_DATE = date(2026, 10, 31)
HISTORY_DAYS = 730
# Above this many orders the data set is generated in parts (bounded memory); order ids of part k start at
# k × PART_ORDER_SPAN.
PART_ORDERS = 1_000_000
PART_ORDER_SPAN = 10_000_000
DAY = 86_400
EPOCH_DAY0 = np.datetime64("1970-01-01", "D")

# --------------------------------------------------------------------------------------------------
# vocabularies (plain text, no quotes or backslashes: they are embedded in JSON without escaping)

COUNTRIES = ("US", "GB", "IT", "DE", "FR", "UA", "PL", "BR")
US, GB, IT, DE, FR, UA, PL, BR = range(8)
BREVO_COUNTRY_P = (0.45, 0.15, 0.18, 0.12, 0.10, 0.0, 0.0, 0.0)
ESPUTNIK_COUNTRY_P = (0.14, 0.12, 0.0, 0.16, 0.0, 0.38, 0.20, 0.0)
FIRST_NAMES = {
    US: "James Mary John Patricia Robert Jennifer Michael Linda William Elizabeth David Emily Chris Ashley "
    "Daniel "
    "Sarah Matthew Jessica Kevin Olivia",
    GB: "Oliver Amelia George Isla Harry Ava Jack Sophie Charlie Grace Thomas Lily Alfie Freya Jacob Poppy",
    IT: "Giulia Marco Francesca Luca Chiara Alessandro Sara Matteo Martina Lorenzo Giorgia Andrea Elena Niccolò",
    DE: "Lukas Anna Jonas Lea Leon Hannah Felix Lena Maximilian Marie Paul Sophie Jürgen Katrin",
    FR: "Louis Emma Gabriel Léa Hugo Chloé Arthur Manon Jules Camille Lucas Inès Raphaël Zoé",
    UA: "Olena Andrii Iryna Oleksandr Kateryna Dmytro Nataliia Serhii Yuliia Mykola Oksana Taras Sofiia Bohdan",
    PL: "Anna Jakub Zofia Kacper Julia Szymon Maja Filip Łucja Mateusz Wiktoria Paweł",
    BR: "João Maria José Ana Pedro Juliana Lucas Fernanda Gabriel Camila Rafael Beatriz Mateus Letícia "
    "Thiago "
    "Larissa Vinícius Bruna",
}
LAST_NAMES = {
    US: "Smith Johnson Williams Brown Jones Garcia Miller Davis Wilson Anderson Taylor Thomas Moore Martin Lee",
    GB: "Smith Jones Taylor Brown Williams Wilson Evans Thomas Roberts Walker Wright Hughes Green Clarke",
    IT: "Rossi Russo Ferrari Esposito Bianchi Romano Colombo Ricci Marino Greco Bruno Gallo Conti De Luca",
    DE: "Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Koch Richter Wolf",
    FR: "Martin Bernard Dubois Thomas Robert Richard Petit Durand Leroy Moreau Simon Laurent Lefèvre",
    UA: "Shevchenko Bondarenko Kovalenko Tkachenko Kravchenko Oliinyk Shevchuk Polishchuk Lysenko Moroz Marchenko",
    PL: "Nowak Kowalski Wiśniewski Wójcik Kowalczyk Kamiński Lewandowski Zieliński Szymański Woźniak",
    BR: "Silva Santos Oliveira Souza Rodrigues Ferreira Alves Pereira Lima Gomes Costa Ribeiro Martins "
    "Carvalho "
    "Araújo Conceição",
}
CITIES = {
    US: "New York,Los Angeles,Chicago,Houston,Phoenix,Seattle,Boston,Miami,Denver,Austin",
    GB: "London,Manchester,Birmingham,Leeds,Glasgow,Bristol,Liverpool,Edinburgh",
    IT: "Milano,Roma,Napoli,Torino,Bologna,Firenze,Genova,Verona",
    DE: "Berlin,Hamburg,München,Köln,Frankfurt am Main,Stuttgart,Leipzig",
    FR: "Paris,Lyon,Marseille,Toulouse,Nice,Nantes,Bordeaux,Lille",
    UA: "Kyiv,Lviv,Odesa,Kharkiv,Dnipro,Zaporizhzhia,Vinnytsia",
    PL: "Warszawa,Kraków,Wrocław,Gdańsk,Poznań,Łódź",
    BR: "São Paulo,Rio de Janeiro,Belo Horizonte,Curitiba,Porto Alegre,Salvador,Recife,Brasília",
}
STREETS = {
    US: "Main St,Oak Ave,Maple Dr,Park Ave,Elm St,Sunset Blvd",
    GB: "High Street,Station Road,Church Lane,Victoria Road,Mill Lane",
    IT: "Via Roma,Via Garibaldi,Corso Italia,Via Dante,Via Mazzini",
    DE: "Hauptstraße,Bahnhofstraße,Gartenstraße,Schillerstraße,Lindenweg",
    FR: "Rue de la Paix,Rue Victor Hugo,Avenue Jean Jaurès,Rue Pasteur,Boulevard Voltaire",
    UA: "Khreshchatyk St,Shevchenka St,Franka St,Sadova St,Hrushevskoho St",
    PL: "ul. Długa,ul. Polna,ul. Leśna,ul. Słoneczna,ul. Kościuszki",
    BR: "Rua Augusta,Avenida Paulista,Rua das Flores,Avenida Brasil,Rua XV de Novembro",
}
EMAIL_DOMAINS = {
    US: "gmail.com yahoo.com outlook.com icloud.com hotmail.com",
    GB: "gmail.com outlook.com yahoo.co.uk btinternet.com icloud.com",
    IT: "gmail.com libero.it hotmail.it yahoo.it virgilio.it",
    DE: "gmail.com web.de gmx.de t-online.de outlook.de",
    FR: "gmail.com orange.fr free.fr hotmail.fr laposte.net",
    UA: "gmail.com ukr.net i.ua meta.ua outlook.com",
    PL: "gmail.com wp.pl onet.pl interia.pl o2.pl",
    BR: "gmail.com hotmail.com uol.com.br bol.com.br yahoo.com.br",
}
PHONE_PREFIXES = {  # country code + operator / area prefix; 7 unique digits follow (+1 random digit for BR)
    US: "1212 1415 1312 1617 1305 1206 1512",
    GB: "44770 44771 44775 44780 44790 44797",
    IT: "39320 39333 39340 39347 39366 39388",
    DE: "49151 49160 49170 49176 49157",
    FR: "3361 3362 3365 3367 3368 3376 3377 3378",
    UA: "38050 38063 38067 38093 38094 38097",
    PL: "4850 4860 4869 4879 4888",
    BR: "55119 55219 55319 55419 55519 55619 55719 55819",
}
TIMEZONES = {  # (winter offset, summer offset) in minutes; summer = April..October (close enough to real DST)
    US: (-300, -240),
    GB: (0, 60),
    IT: (60, 120),
    DE: (60, 120),
    FR: (60, 120),
    UA: (120, 180),
    PL: (60, 120),
    BR: (-180, -180),
}
TAX_RATE = {US: 0.08, GB: 0.20, IT: 0.22, DE: 0.19, FR: 0.20, UA: 0.20, PL: 0.23, BR: 0.0}

CURRENCIES = ("USD", "EUR", "GBP", "BRL")
USD_, EUR_, GBP_, BRL_ = range(4)
FX_TO_USD = np.array([1.0, 1.08, 1.27, 0.18])
PRICE_FROM_USD = np.array([1.0, 0.92, 0.79, 5.4])

TIERS = ("Bronze", "Silver", "Gold", "Platinum")
TIER_MIN = np.array([0, 1000, 2500, 5000])
TIER_MULT = np.array([1.0, 1.1, 1.25, 1.5])
TIER_MULT_TEXT = ("1.0", "1.1", "1.25", "1.5")

# (top category, sub-categories, product nouns, brands)
CATEGORY_TREE = (
    (
        "Electronics",
        "Wearables Audio Accessories Gadgets Computers",
        "Smart Watch,Wireless Earbuds,Bluetooth Speaker,"
        "Wireless Charger,USB-C Hub,Noise Cancelling Headphones,Tablet Stand,Mechanical Keyboard,Webcam,"
        "Power Bank",
        "TechBrand Voltix Soundwave Nexo Pixelon",
    ),
    (
        "Fashion",
        "Shoes Outerwear Bags Knitwear Denim",
        "Leather Sneakers,Wool Coat,Canvas Tote,Cashmere Sweater,"
        "Slim Jeans,Silk Scarf,Leather Belt,Rain Jacket,Ankle Boots,Linen Shirt",
        "Urbano Maison Verde Nordkap Aria",
    ),
    (
        "Home",
        "Kitchen Decor Bedding Lighting",
        "Ceramic Mug Set,Cast Iron Pan,Linen Duvet Cover,Table Lamp,"
        "Scented Candle,Chef Knife,Glass Carafe,Throw Blanket,Wall Clock",
        "Casa Nova Hearth Lumen Kitchenly",
    ),
    (
        "Beauty",
        "Skincare Fragrance Makeup Haircare",
        "Hydrating Serum,Eau de Parfum,Matte Lipstick,Night Cream,Argan Hair Oil,Clay Mask,Vitamin C Serum,Body Lotion",
        "Lumière Glowe Botanica Velour",
    ),
    (
        "Sports",
        "Fitness Running Outdoor Cycling",
        "Yoga Mat,Running Shoes,Resistance Bands,Trail Backpack,Cycling Gloves,Water Bottle,Foam Roller,Dumbbell Set",
        "Stride Peakline Velo Fitcore",
    ),
    (
        "Books",
        "Fiction Cooking Travel Business",
        "Hardcover Novel,Cookbook,Travel Guide,Business Handbook,Poetry Collection,Graphic Novel",
        "Penwood Northbook Folio",
    ),
    (
        "Toys",
        "Puzzles Building Plush Games",
        "Wooden Puzzle,Building Blocks,Plush Bear,Board Game,Remote Control Car,Art Kit",
        "Playmo Kidora Tinker",
    ),
    (
        "Grocery",
        "Coffee Tea Snacks Pantry",
        "Espresso Beans,Green Tea,Dark Chocolate,Olive Oil,Granola,Honey Jar,Pasta Pack",
        "Origo Terra Buono",
    ),
    (
        "Jewelry",
        "Rings Necklaces Watches Earrings",
        "Silver Ring,Gold Necklace,Automatic Watch,Pearl Earrings,Charm Bracelet",
        "Aurum Stellare Orafina",
    ),
    (
        "Garden",
        "Plants Tools Outdoor",
        "Herb Planter,Pruning Shears,Garden Hose,Bird Feeder,Solar Lantern",
        "Greenly Verdant Rootwise",
    ),
)
CATEGORY_MEDIAN_USD = np.array([60.0, 55.0, 35.0, 28.0, 35.0, 18.0, 25.0, 12.0, 90.0, 25.0])
CATEGORY_VARIANTS = (
    ("Black", "White", "Silver", "Black/42mm", "Silver/40mm", "Space Grey"),
    ("Black/S", "Black/M", "Navy/M", "Grey/L", "Red/S", "Blue/XL", "Beige/M"),
    ("White", "Natural", "Grey", "Terracotta", "Sage"),
    ("30ml", "50ml", "100ml", "Rose", "Nude"),
    ("Black/M", "Blue/L", "Green", "Orange", "EU 42", "EU 39"),
    ("Hardcover", "Paperback"),
    ("Red", "Blue", "Multicolour"),
    ("250g", "500g", "1kg"),
    ("Silver", "Gold", "Rose Gold", "Size 52", "Size 56"),
    ("Green", "Black", "Small", "Large"),
)

BREVO_SOURCE_META = ("Website", "Mobile App", "Marketplace")
BREVO_REFERRERS = (
    "Google Ads",
    "Facebook",
    "Instagram",
    "Newsletter",
    "Direct",
    "Organic Search",
    "Affiliate",
)
BREVO_USER_AGENTS = (
    "Chrome/Windows",
    "Safari/macOS",
    "Mobile Safari/iOS",
    "Chrome Mobile/Android",
    "Firefox/Linux",
)
# campaign index -> name per source (-1 = none)
CAMPAIGNS = (
    "Black Friday",
    "Christmas",
    "Summer Sale",
    "Spring Collection",
    "Back to School",
    "Newsletter",
    "Mother's Day",
)
BONIFIQ_CAMPAIGNS = (
    "Black Friday",
    "Natal",
    "Liquida Verão",
    "Coleção Primavera",
    "Volta às Aulas",
    "Newsletter",
    "Dia das Mães",
)
BREVO_COUPONS = (("LOYALTY5", 5), ("LOYALTY10", 10), ("LOYALTY20", 20), ("SAVE10", 10), ("VIP25", 25))
BONIFIQ_COUPONS = (("RESGATE-R10", 10), ("RESGATE-R20", 20), ("RESGATE-R50", 50), ("FRETE-GRATIS", 0))
BREVO_PAYMENT = ("Credit Card", "PayPal", "Apple Pay", "Klarna", "Bank Transfer")
BREVO_SHIP_METHOD = ("Standard Shipping", "Express Shipping", "Store Pickup")
BREVO_CARRIERS = ("UPS", "FedEx", "DHL", "USPS", "Royal Mail", "BRT", "GLS")
BREVO_CARRIER_URL = (
    "https://www.ups.com/track?tracknum=",
    "https://www.fedex.com/fedextrack/?trknbr=",
    "https://www.dhl.com/track?id=",
    "https://tools.usps.com/go/TrackConfirmAction?tLabels=",
    "https://www.royalmail.com/track-your-item#/tracking-results/",
    "https://vas.brt.it/track/",
    "https://gls-group.com/track/",
)
BREVO_WAREHOUSES = ("NYC-01", "LAX-02", "LON-01", "MIL-01", "BER-02", "PAR-01")
BREVO_DELIVERY_LOC = ("Front Door", "Reception", "Parcel Locker", "Neighbour", "Mailbox")
BREVO_SIGNATURE = ("Customer", "Neighbour", "Concierge")
BONIFIQ_PAYMENT = (
    "Visa Credit Card",
    "Mastercard Credit Card",
    "Elo Debit Card",
    "Pix",
    "Boleto Bancário",
    "Amex Credit Card",
)
BONIFIQ_BRANCHES = (
    "Loja Paulista",
    "Loja Shopping Ibirapuera",
    "Loja Savassi BH",
    "Loja Barra RJ",
    "Loja Moinhos POA",
)
BONIFIQ_SALESPEOPLE = (
    "Ana Souza",
    "Carlos Lima",
    "Fernanda Rocha",
    "Rafael Nunes",
    "Juliana Prado",
    "Marcos Teixeira",
)
BONIFIQ_PENDING_STATUS = ("Aguardando pagamento", "Pagamento aprovado", "Em separação")
BONIFIQ_DONE_STATUS = ("Entregue", "Faturado", "Concluído")
ESPUTNIK_STATUS = ("INITIALIZED", "IN_PROGRESS", "DELIVERED", "CANCELLED", "ABANDONED_SHOPPING_CART")
ESPUTNIK_DELIVERY = ("courier", "express", "pickup", "nova_poshta", "post")
ESPUTNIK_PAYMENT = ("card", "cash", "paypal", "apple_pay", "google_pay")

# --------------------------------------------------------------------------------------------------
# output shapes: (dotted field path, kind); s = string, n = number, b = boolean, j = raw JSON,
# z = string written as an explicit null when absent (JSON); CSV columns are the dotted paths, empty = absent.

BREVO_ORDER_FIELDS = (
    ("id", "s"),
    ("email", "s"),
    ("customerId", "s"),
    ("loyaltyId", "s"),
    ("billing.name", "s"),
    ("billing.phone", "s"),
    ("billing.city", "s"),
    ("billing.country", "s"),
    ("shipping.cost", "n"),
    ("shipping.method", "s"),
    ("products", "j"),
    ("financial.subtotal", "n"),
    ("financial.shipping", "n"),
    ("financial.tax", "n"),
    ("financial.discount", "n"),
    ("financial.total", "n"),
    ("financial.currency", "s"),
    ("financial.paymentMethod", "s"),
    ("financial.paymentStatus", "s"),
    ("loyalty.pointsEarned", "n"),
    ("loyalty.bonusPoints", "n"),
    ("loyalty.pointsMultiplier", "n"),
    ("loyalty.tierBefore", "s"),
    ("loyalty.tierAfter", "s"),
    ("loyalty.totalPointsBalance", "n"),
    ("loyalty.couponUsed", "s"),
    ("loyalty.couponDiscount", "n"),
    ("loyalty.birthdayBonus", "n"),
    ("loyalty.referralBonus", "n"),
    ("loyalty.subscriptionBonus", "n"),
    ("metadata.source", "s"),
    ("metadata.campaign", "s"),
    ("metadata.referrer", "s"),
    ("metadata.userAgent", "s"),
    ("metadata.firstPurchase", "b"),
    ("metadata.returningCustomer", "b"),
    ("metadata.isReferralOrder", "b"),
    ("metadata.referralSource", "s"),
    ("subscription.id", "s"),
    ("subscription.type", "s"),
    ("subscription.frequency", "n"),
    ("subscription.isRecurring", "b"),
    ("revenue", "n"),
    ("date", "s"),
    ("status", "s"),
)
BREVO_UPDATE_FIELDS = (
    ("id", "s"),
    ("status", "s"),
    ("tracking.number", "s"),
    ("tracking.carrier", "s"),
    ("tracking.url", "s"),
    ("fulfillment.date", "s"),
    ("fulfillment.warehouse", "s"),
    ("fulfillment.method", "s"),
    ("delivery.date", "s"),
    ("delivery.signature", "s"),
    ("delivery.location", "s"),
    ("loyalty.reviewIncentive", "n"),
    ("loyalty.reviewIncentiveExpiry", "s"),
    ("updatedAt", "s"),
)
BONIFIQ_FIELDS = (
    ("OriginalId", "s"),
    ("OrderPlacementDate", "s"),
    ("OrderCompletedDate", "z"),
    ("OrderCancelledDate", "z"),
    ("OrderStatus", "s"),
    ("IsCompleted", "b"),
    ("IsCancelledOrReturned", "b"),
    ("OrderTotal", "n"),
    ("Customer.OriginalId", "s"),
    ("Customer.Name", "s"),
    ("Customer.Email", "s"),
    ("Customer.Phone", "s"),
    ("Products", "j"),
    ("Coupon", "z"),
    ("Metadatas", "j"),
    ("PaymentMethod", "s"),
    ("Branch", "z"),
    ("SalesPerson", "z"),
    ("LastUpdate", "s"),
)
ESPUTNIK_FIELDS = (
    ("externalOrderId", "s"),
    ("externalCustomerId", "s"),
    ("totalCost", "n"),
    ("status", "s"),
    ("date", "s"),
    ("email", "s"),
    ("phone", "s"),
    ("firstName", "s"),
    ("lastName", "s"),
    ("currency", "s"),
    ("shipping", "n"),
    ("discount", "n"),
    ("deliveryMethod", "s"),
    ("paymentMethod", "s"),
    ("deliveryAddress", "s"),
    ("items", "j"),
)
ITEM_COLUMN = {"brevo": "products", "bonifiq": "Products", "esputnik": "items"}


# --------------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class BadRecord:
    """One intentionally bad record: where it is and the reason code it must be quarantined with."""

    source: str
    path: str  # relative to out_dir, posix
    index: int  # 0-based record position in the file: line (ndjson), data row (csv), element (json array)
    reason: str


@dataclass
class GenerateSummary:
    """What `generate` wrote. Bad records are marked three ways: `bad_records` (reason code -> intended count,
    all 11 codes present, zeros included), `bad_records_by_source`, and `bad_record_locations` (one
    `BadRecord(source, path, index, reason)` per bad record). Every record not listed there is valid."""

    out_dir: Path
    seed: int
    orders: int  # good orders requested and written (bad records come on top)
    customers: int  # customer pool size (people; some appear in two sources)
    start_date: date
    end_date: date
    period: str  # day | week | month: the time span of one file
    files: list[str] = field(default_factory=list)  # relative posix paths, sorted
    file_kinds: dict[str, str] = field(default_factory=dict)  # path -> kind (ndjson, csv, json_array, ...)
    records_per_source: dict[str, int] = field(default_factory=dict)  # every line / element / row written
    orders_per_source: dict[str, int] = field(default_factory=dict)  # distinct good orders
    # later records of an order: status updates and re-sends (not the exact duplicates)
    updates_per_source: dict[str, int] = field(default_factory=dict)
    duplicates_per_source: dict[str, int] = field(default_factory=dict)  # exact re-sends of a record
    abandoned_carts: int = 0
    bad_records: dict[str, int] = field(default_factory=dict)  # reason code -> intended count (all 11 codes)
    bad_records_by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    bad_record_locations: list[BadRecord] = field(default_factory=list)

    @property
    def total_records(self) -> int:
        return sum(self.records_per_source.values())

    @property
    def total_bad_records(self) -> int:
        return sum(self.bad_records.values())


def _combine(parts: list[GenerateSummary], orders: int, customers: int, seed: int) -> GenerateSummary:
    """One summary of a data set written in parts."""
    first = parts[0]

    def added(name: str) -> dict:
        total: dict = {}
        for part in parts:
            for key, value in getattr(part, name).items():
                total[key] = total.get(key, 0) + value
        return total

    return GenerateSummary(
        out_dir=first.out_dir,
        seed=seed,
        orders=orders,
        customers=customers,
        start_date=first.start_date,
        end_date=first.end_date,
        period=first.period,
        files=sorted(f for part in parts for f in part.files),
        file_kinds={k: v for part in parts for k, v in part.file_kinds.items()},
        records_per_source=added("records_per_source"),
        orders_per_source=added("orders_per_source"),
        updates_per_source=added("updates_per_source"),
        duplicates_per_source=added("duplicates_per_source"),
        abandoned_carts=sum(part.abandoned_carts for part in parts),
        bad_records=added("bad_records"),
        bad_records_by_source={
            source: {
                code: sum(part.bad_records_by_source[source][code] for part in parts)
                for code in first.bad_records_by_source[source]
            }
            for source in first.bad_records_by_source
        },
        bad_record_locations=[b for part in parts for b in part.bad_record_locations],
    )


# --------------------------------------------------------------------------------------------------
# small vectorized helpers


def _words(text: str, sep: str = " ") -> list[str]:
    return [w for w in text.split(sep) if w]


def _ascii(text: str) -> str:
    text = text.replace("ł", "l").replace("Ł", "L").replace("ß", "ss")
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().replace("'", "").replace(" ", "")


def _pick(vocab, idx: np.ndarray) -> pl.Series:
    """vocab[idx] as a string Series; null where idx < 0."""
    values = pl.Series(values=[*vocab, None], dtype=pl.String)
    idx = np.asarray(idx, dtype=np.int64)
    return values.gather(np.where(idx < 0, len(vocab), idx))


def _text(values: np.ndarray, null: np.ndarray | None = None) -> pl.Series:
    """Integers as decimal text; null where `null`."""
    s = pl.Series(np.asarray(values, dtype=np.int64)).cast(pl.String)
    return _null_where(s, null)


def _null_where(s: pl.Series, null: np.ndarray | None) -> pl.Series:
    if null is None or not null.any():
        return s
    return pl.select(pl.when(pl.Series(null)).then(None).otherwise(s)).to_series()


def _money(cents: np.ndarray, null: np.ndarray | None = None) -> pl.Series:
    """Non-negative integer cents as decimal text with two places ("149.90")."""
    c = pl.Series(np.asarray(cents, dtype=np.int64))
    s = pl.select(pl.format("{}.{}", c // 100, (c % 100).cast(pl.String).str.zfill(2))).to_series()
    return _null_where(s, null)


def _ts_utc(ts: np.ndarray, null: np.ndarray | None = None) -> pl.Series:
    s = pl.from_epoch(pl.Series(np.asarray(ts, dtype=np.int64)), time_unit="s").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return _null_where(s, null)


def _ts_offset(ts: np.ndarray, offset_min: np.ndarray) -> pl.Series:
    """Local wall time with its UTC offset, e.g. 2025-03-08T11:30:00+02:00."""
    offset_min = np.asarray(offset_min, dtype=np.int64)
    local = pl.from_epoch(pl.Series(np.asarray(ts, dtype=np.int64) + offset_min * 60), time_unit="s")
    table = {m: f"{'+' if m >= 0 else '-'}{abs(m) // 60:02d}:{abs(m) % 60:02d}" for m in np.unique(offset_min)}
    keys = sorted(table)
    suffix = _pick([table[k] for k in keys], np.searchsorted(keys, offset_min))
    return pl.select(pl.concat_str([local.dt.strftime("%Y-%m-%dT%H:%M:%S"), suffix])).to_series()


def _bool(values: np.ndarray, null: np.ndarray | None = None) -> pl.Series:
    return _null_where(_pick(("false", "true"), np.asarray(values, dtype=np.int64)), null)


def _group_start(keys_sorted: np.ndarray) -> np.ndarray:
    """Index of the first row of each row's group, for rows sorted by key."""
    n = len(keys_sorted)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    new = np.ones(n, dtype=bool)
    new[1:] = keys_sorted[1:] != keys_sorted[:-1]
    return np.maximum.accumulate(np.where(new, np.arange(n), 0))


def _group_rank_and_cumsum(keys: np.ndarray, order_by: np.ndarray, *values: np.ndarray):
    """Rank of each row inside its key group (by `order_by`) and the cumulative sums BEFORE the row."""
    perm = np.lexsort((order_by, keys))
    start = _group_start(keys[perm])
    rank = np.empty(len(keys), dtype=np.int64)
    rank[perm] = np.arange(len(keys)) - start
    sums = []
    for v in values:
        cs = np.cumsum(v[perm])
        before = cs - v[perm] - np.where(start > 0, cs[start - 1], 0)
        out = np.empty(len(keys), dtype=cs.dtype)
        out[perm] = before
        sums.append(out)
    return rank, sums


def _json_expr(fields) -> pl.Expr:
    """A compact JSON object per row from flat text columns named by dotted paths, in one string pass.

    Null fields are left out. An object (top level or nested) is present exactly when its FIRST field is
    non-null, so that field is written without a leading comma; the shapes above are built to honour that.
    """
    parts: list[pl.Expr] = []
    open_objects: list[tuple[str, pl.Expr]] = []  # (dotted prefix, presence column)

    def close_to(depth: int) -> None:
        while len(open_objects) > depth:
            _, present = open_objects.pop()
            parts.append(pl.when(present.is_not_null()).then(pl.lit("}")))

    first_in_object = True
    for path, kind in fields:
        keys = path.split(".")
        depth = 0
        while (
            depth < len(open_objects)
            and depth < len(keys) - 1
            and open_objects[depth][0] == ".".join(keys[: depth + 1])
        ):
            depth += 1
        if depth < len(open_objects):
            close_to(depth)
            first_in_object = False
        col = pl.col(path)
        while len(open_objects) < len(keys) - 1:  # open the nested objects of this field
            key = keys[len(open_objects)]
            comma = "" if first_in_object else ","
            parts.append(pl.when(col.is_not_null()).then(pl.lit(f'{comma}"{key}":{{')))
            open_objects.append((".".join(keys[: len(open_objects) + 1]), col))
            first_in_object = True
        comma = "" if first_in_object else ","
        first_in_object = False
        if kind in ("s", "z"):
            value = pl.concat_str([pl.lit(f'{comma}"{keys[-1]}":"'), col, pl.lit('"')])
        else:
            value = pl.concat_str([pl.lit(f'{comma}"{keys[-1]}":'), col])
        if kind == "z":
            value = pl.when(col.is_null()).then(pl.lit(f'{comma}"{keys[-1]}":null')).otherwise(value)
        parts.append(value)
    close_to(0)
    return pl.concat_str([pl.lit("{"), *parts, pl.lit("}")], ignore_nulls=True).alias("_json")


def _dumps(record) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------------------------------
# calendar, catalog, customers, orders


@dataclass
class _Calendar:
    start_day: np.datetime64
    n_days: int
    start_ts: int
    end_ts: int  # last second of the end date
    cdf: np.ndarray  # cumulative order intensity by day

    @classmethod
    def build(cls, end: date) -> _Calendar:
        end_day = np.datetime64(end.isoformat(), "D")
        start_day = end_day - (HISTORY_DAYS - 1)
        days = start_day + np.arange(HISTORY_DAYS)
        day_num = (days - EPOCH_DAY0).astype(np.int64)
        dow = (day_num + 3) % 7  # 0 = Monday
        weekly = np.array([1.02, 0.97, 0.96, 0.99, 1.04, 1.08, 1.15])[dow]
        month = days.astype("datetime64[M]").astype(np.int64) % 12  # 0 = January
        dom = (days - days.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1
        season = np.array([0.82, 0.84, 0.94, 0.96, 1.0, 0.95, 0.9, 0.9, 0.98, 1.04, 1.3, 1.45])[month]
        black_friday = ((month == 10) & (dom >= 24)) | ((month == 11) & (dom <= 1))
        xmas = (month == 11) & (dom >= 14) & (dom <= 22)
        quiet = (month == 11) & (dom >= 25) & (dom <= 26)
        season = season * np.where(black_friday, 2.0, 1.0) * np.where(xmas, 1.25, 1.0) * np.where(quiet, 0.5, 1.0)
        trend = 1.0 + 0.35 * np.arange(HISTORY_DAYS) / HISTORY_DAYS
        weight = weekly * season * trend
        cdf = np.cumsum(weight) / weight.sum()
        start_ts = int(day_num[0]) * DAY
        return cls(start_day, HISTORY_DAYS, start_ts, start_ts + HISTORY_DAYS * DAY - 1, cdf)

    def sample_days(self, u: np.ndarray, lo_day: np.ndarray | None = None, hi_day: np.ndarray | None = None):
        """Days drawn from the seasonal intensity (restricted to [lo_day, hi_day] when given)."""
        if lo_day is not None:
            lo = np.where(lo_day > 0, self.cdf[np.maximum(lo_day - 1, 0)], 0.0)
            hi = self.cdf[hi_day]
            u = lo + u * (hi - lo)
        return np.minimum(np.searchsorted(self.cdf, u, side="right"), self.n_days - 1)


# fmt: off
HOUR_WEIGHTS = np.array([1.0, 0.6, 0.4, 0.3, 0.3, 0.4, 0.7, 1.2, 1.8, 2.2, 2.4, 2.6,  # UTC hour of day
                         2.8, 2.7, 2.5, 2.4, 2.4, 2.6, 3.0, 3.3, 3.4, 3.0, 2.3, 1.5])
# fmt: on


def _time_of_day(rng, n: int) -> np.ndarray:
    hour = rng.choice(24, n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    return hour * 3600 + rng.integers(0, 3600, n)


def _slug(text: str) -> str:
    return "-".join(_ascii(w).lower() for w in text.replace("/", " ").split())


def _catalog(rng, n_products: int = 800) -> dict:
    top = rng.integers(0, len(CATEGORY_TREE), n_products)
    price = CATEGORY_MEDIAN_USD[top] * np.exp(rng.normal(0.0, 0.75, n_products))
    luxury = rng.random(n_products) < np.where(np.isin(top, (1, 3, 8)), 0.16, 0.02)
    price = np.where(luxury, price * 4.0, price)
    eco = rng.random(n_products) < np.where(np.isin(top, (2, 4, 7, 9)), 0.2, 0.04)
    price = np.clip(price, 3.0, 5000.0)
    order = np.argsort(price, kind="stable")  # catalog sorted by price: product index ~ price level
    top, price, luxury, eco = top[order], price[order], luxury[order], eco[order]
    sub_pick = rng.integers(0, 100, n_products)
    noun_pick = rng.integers(0, 100, n_products)
    brand_pick = rng.integers(0, 100, n_products)
    model_pick = rng.integers(0, 6, n_products)
    has_variant = rng.random(n_products) < 0.45
    variant_pick = rng.integers(0, 100, n_products)
    adjectives = ("", "Pro", "Plus", "Classic", "Mini", "Max")
    rows = []
    for p in range(n_products):
        cat_name, subs, nouns, brands = CATEGORY_TREE[top[p]]
        subs, nouns, brands = _words(subs), _words(nouns, ","), _words(brands)
        noun = nouns[noun_pick[p] % len(nouns)]
        name = f"{noun} {adjectives[model_pick[p]]}".strip()
        categories = [cat_name, subs[sub_pick[p] % len(subs)]]
        if luxury[p]:
            categories.insert(0, "Luxury")
        if eco[p]:
            categories.insert(0, "Eco-Friendly")
        variants = CATEGORY_VARIANTS[top[p]]
        variant = variants[variant_pick[p] % len(variants)] if has_variant[p] else None
        initials = "".join(_ascii(w)[0] for w in noun.replace("-", " ").split()).upper()
        sku = f"{initials}-{p + 100:04d}"
        if variant:
            sku += "-" + "-".join(_ascii(part)[:3].upper() for part in variant.replace(" ", "/").split("/"))
        rows.append((name, categories, variant, sku, brands[brand_pick[p] % len(brands)]))
    usd_cents = (np.maximum(np.floor(price), 1) * 100 - 1).astype(np.int64)  # 29.99 style
    cur_cents = np.empty((n_products, 4), dtype=np.int64)
    for c in range(4):
        x = price * PRICE_FROM_USD[c]
        ending = 90 if c == BRL_ else 99
        cur_cents[:, c] = (np.maximum(np.floor(x), 1) * 100 - 100 + ending).astype(np.int64)
    cur_cents[:, USD_] = usd_cents
    multiplier = np.where(luxury, 2.0, np.where(eco, 1.5, 1.0))
    brevo_head, bonifiq_head, esputnik_head, esputnik_tail = [], [], [], []
    for p, (name, categories, variant, sku, brand) in enumerate(rows):
        pid = f"PROD-{p + 100:04d}"
        v = f',"variant":"{variant}"' if variant else ""
        brevo_head.append(f'{{"id":"{pid}","name":"{name}"{v},"sku":"{sku}"')
        bonifiq_head.append(f'{{"OriginalId":"{sku}","Name":"{name}"')
        esputnik_head.append(f'{{"externalItemId":"{200000 + p}","name":"{name}","category":"{categories[0]}"')
        url = f"https://shop.example.com/p/{200000 + p}-{_slug(name)}"
        esputnik_tail.append(
            f',"url":"{url}","imageUrl":"https://cdn.shop.example.com/img/{200000 + p}.jpg",'
            f'"description":"{brand} {name.lower()}, {categories[-1].lower()}"}}'
        )
    return {
        "n": n_products,
        "cents": cur_cents,
        "multiplier": multiplier,
        "id": [f"PROD-{p + 100:04d}" for p in range(n_products)],
        "name": [r[0] for r in rows],
        "categories_json": [_dumps(r[1]) for r in rows],
        "category_first": [r[1][0] for r in rows],
        "brand": [r[4] for r in rows],
        "brevo_head": brevo_head,
        "bonifiq_head": bonifiq_head,
        "esputnik_head": esputnik_head,
        "esputnik_tail": esputnik_tail,
        "multiplier_text": ["2.0" if m == 2.0 else "1.5" if m == 1.5 else "1.0" for m in multiplier],
    }


@dataclass
class _Customers:
    n: int
    home: np.ndarray
    cross: np.ndarray  # 0 none, 1 brevo+esputnik (same e-mail), 2 esputnik+bonifiq (same phone)
    country: np.ndarray
    level: np.ndarray  # spend level in [0, 1): which part of the (price-sorted) catalog they buy
    first_name: pl.Series
    last_name: pl.Series
    email: pl.Series
    email_brevo: pl.Series  # some people type their address with capitals
    phone: pl.Series  # digits with country code
    city: pl.Series
    street: pl.Series
    euro_buyer: np.ndarray  # UA customers of eSputnik paying in EUR instead of USD
    contact_mode: np.ndarray  # eSputnik: 0 e-mail + phone, 1 e-mail only, 2 phone only
    doc_kind: np.ndarray  # BonifiQ: 0 online (e-mail id), 1 CPF, 2 CNPJ
    document: pl.Series
    bonifiq_email: np.ndarray
    bonifiq_phone: np.ndarray
    subscriber: np.ndarray
    birthday_month: np.ndarray


def _cpf_cnpj(rng, n: int, unique_base: np.ndarray, cnpj: np.ndarray) -> pl.Series:
    """Valid Brazilian CPF (11 digits) or CNPJ (14 digits) documents, unique per customer."""
    base9 = (unique_base * 7_654_321 + 1_234_567) % 1_000_000_000
    digits = np.stack([(base9 // 10 ** (8 - i)) % 10 for i in range(9)], axis=1)
    w1 = np.arange(10, 1, -1)
    s1 = (digits * w1).sum(1) % 11
    d1 = np.where(s1 < 2, 0, 11 - s1)
    d10 = np.concatenate([digits, d1[:, None]], axis=1)
    s2 = (d10 * np.arange(11, 1, -1)).sum(1) % 11
    d2 = np.where(s2 < 2, 0, 11 - s2)
    cpf = np.concatenate([d10, d2[:, None]], axis=1)
    # CNPJ: 8 digits root + 0001 branch + 2 check digits
    root = np.concatenate([digits[:, :8], np.tile([0, 0, 0, 1], (n, 1))], axis=1)
    wa = np.array([5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2])
    sa = (root * wa).sum(1) % 11
    da = np.where(sa < 2, 0, 11 - sa)
    r13 = np.concatenate([root, da[:, None]], axis=1)
    wb = np.array([6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2])
    sb = (r13 * wb).sum(1) % 11
    db = np.where(sb < 2, 0, 11 - sb)
    cn = np.concatenate([r13, db[:, None]], axis=1)
    cpf_num = (cpf * 10 ** np.arange(10, -1, -1)).sum(1)
    cnpj_num = (cn * 10 ** np.arange(13, -1, -1)).sum(1)
    cpf_s = pl.Series(cpf_num).cast(pl.String).str.zfill(11)
    cnpj_s = pl.Series(cnpj_num).cast(pl.String).str.zfill(14)
    return pl.select(pl.when(pl.Series(cnpj)).then(cnpj_s).otherwise(cpf_s)).to_series()


def _vocab_by_country(table: dict, sep: str = " "):
    """Flattened vocabulary with per-country offsets and sizes."""
    flat, off, size = [], np.zeros(len(COUNTRIES), np.int64), np.zeros(len(COUNTRIES), np.int64)
    for c in range(len(COUNTRIES)):
        words = _words(table[c], sep)
        off[c], size[c] = len(flat), len(words)
        flat.extend(words)
    return flat, off, size


def _by_country(rng, table, country, sep=" "):
    flat, off, size = _vocab_by_country(table, sep)
    idx = off[country] + (rng.integers(0, 1 << 30, len(country)) % size[country])
    return flat, idx


def _make_customers(rng, m: int, counts: np.ndarray, home: np.ndarray, base: int = 0, part: int = 0) -> _Customers:
    cross = np.zeros(m, dtype=np.int8)
    repeat = counts >= 2
    u = rng.random(m)
    cross[repeat & np.isin(home, (ESPUTNIK, BONIFIQ)) & (u < 0.06)] = 2
    cross[repeat & (cross == 0) & np.isin(home, (BREVO, ESPUTNIK)) & (u > 0.94)] = 1
    country = np.where(
        home == BONIFIQ,
        BR,
        np.where(
            (home == ESPUTNIK) & (cross == 0),
            rng.choice(8, m, p=ESPUTNIK_COUNTRY_P),
            rng.choice(8, m, p=BREVO_COUNTRY_P),
        ),
    )
    country = np.where(cross == 2, BR, country)
    first_flat, first_idx = _by_country(rng, FIRST_NAMES, country)
    last_flat, last_idx = _by_country(rng, LAST_NAMES, country)
    city_flat, city_idx = _by_country(rng, CITIES, country, ",")
    dom_flat, dom_idx = _by_country(rng, EMAIL_DOMAINS, country)
    pre_flat, pre_idx = _by_country(rng, PHONE_PREFIXES, country)
    first = _pick(first_flat, first_idx)
    last = _pick(last_flat, last_idx)
    first_a = _pick([_ascii(w).lower() for w in first_flat], first_idx)
    last_a = _pick([_ascii(w).lower() for w in last_flat], last_idx)
    pattern = rng.choice(5, m, p=[0.4, 0.2, 0.15, 0.15, 0.1])
    frame = pl.DataFrame({"f": first_a, "l": last_a, "p": pattern, "d": _pick(dom_flat, dom_idx)})
    local = pl.when(pl.col("p") == 0).then(pl.concat_str(["f", pl.lit("."), "l"]))
    local = local.when(pl.col("p") == 1).then(pl.concat_str(["f", "l"]))
    local = local.when(pl.col("p") == 2).then(pl.concat_str([pl.col("f").str.slice(0, 1), pl.lit("."), "l"]))
    local = local.when(pl.col("p") == 3).then(pl.concat_str(["f", pl.lit("_"), "l"]))
    local = local.otherwise(pl.concat_str(["l", pl.lit("."), "f"]))
    if part:  # a later part of a large data set: its people are other people
        local = pl.concat_str([local, pl.lit(f".{part}x")])
    frame = frame.with_columns(base=pl.concat_str([local, pl.lit("@"), "d"]))
    frame = frame.with_columns(k=pl.col("base").cum_count().over("base"))
    email = frame.select(
        pl.when(pl.col("k") <= 1)
        .then(pl.col("base"))
        .otherwise(pl.concat_str([local, pl.col("k").cast(pl.String), pl.lit("@"), "d"]))
    ).to_series()
    caps = (rng.random(m) < 0.015) | ((cross == 1) & (rng.random(m) < 0.25))
    parts = email.str.split_exact("@", 1)
    titled = pl.concat_str(
        [parts.struct.field("field_0").str.to_titlecase(), pl.lit("@"), parts.struct.field("field_1")]
    )
    email_brevo = pl.select(pl.when(pl.Series(caps)).then(titled).otherwise(email)).to_series()
    serial = ((np.arange(m, dtype=np.int64) + base) * 7_654_321 + 3_141_592) % 10_000_000
    extra = np.where(country == BR, rng.integers(0, 10, m), -1)
    phone = pl.select(
        pl.concat_str(
            [
                _pick(pre_flat, pre_idx),
                pl.Series(serial).cast(pl.String).str.zfill(7),
                _text(extra, extra < 0),
            ],
            ignore_nulls=True,
        )
    ).to_series()
    street_flat, street_idx = _by_country(rng, STREETS, country, ",")
    street = pl.select(
        pl.concat_str([_text(rng.integers(1, 200, m)), pl.lit(" "), _pick(street_flat, street_idx)])
    ).to_series()
    contact_mode = rng.choice(3, m, p=[0.7, 0.2, 0.1])
    contact_mode = np.where((cross == 1) & (contact_mode == 2), 0, contact_mode)
    contact_mode = np.where((cross == 2) & (contact_mode == 1), 0, contact_mode)
    doc_kind = rng.choice(3, m, p=[0.85, 0.13, 0.02])
    doc_kind = np.where(np.isin(home, (BONIFIQ,)) | (cross == 2), doc_kind, 0)
    document = _cpf_cnpj(rng, m, np.arange(m, dtype=np.int64) + base, doc_kind == 2)
    bonifiq_email = (doc_kind == 0) | (rng.random(m) < 0.5)
    bonifiq_phone = (doc_kind > 0) | (cross == 2) | (rng.random(m) < 0.6)
    subscriber = (counts >= 4) & (rng.random(m) < 0.12)
    return _Customers(
        n=m,
        home=home,
        cross=cross,
        country=country,
        level=rng.beta(3.0, 3.0, m),  # most buy mid-catalog: spend long-tailed but not infinitely so
        first_name=first,
        last_name=last,
        email=email,
        email_brevo=email_brevo,
        phone=phone,
        city=_pick(city_flat, city_idx),
        street=street,
        euro_buyer=rng.random(m) < 0.4,
        contact_mode=contact_mode,
        doc_kind=doc_kind,
        document=document,
        bonifiq_email=bonifiq_email,
        bonifiq_phone=bonifiq_phone,
        subscriber=subscriber,
        birthday_month=rng.integers(0, 12, m),
    )


def _currency(src: np.ndarray, country: np.ndarray, euro_buyer: np.ndarray) -> np.ndarray:
    eu = np.isin(country, (IT, DE, FR, PL))
    cur = np.where(country == GB, GBP_, np.where(eu, EUR_, USD_))
    cur = np.where((country == UA) & euro_buyer, EUR_, cur)
    return np.where(src == BONIFIQ, BRL_, cur)


@dataclass
class _Orders:
    """Order-level arrays (good orders first, then the bases of bad records)."""

    src: np.ndarray
    cust: np.ndarray
    ts: np.ndarray
    cur: np.ndarray
    item_order: np.ndarray  # per item: order index
    item_prod: np.ndarray
    item_qty: np.ndarray
    item_price: np.ndarray  # cents in the order currency
    subtotal: np.ndarray
    bad: np.ndarray  # reason index, -1 for good orders
    bad_variant: np.ndarray


def _items(rng, cat: dict, cust: _Customers, o_cust: np.ndarray, o_cur: np.ndarray):
    n = len(o_cust)
    k = np.minimum(rng.geometric(0.5, n), 8)
    item_order = np.repeat(np.arange(n), k)
    lvl = cust.level[o_cust][item_order] + rng.normal(0.0, 0.18, len(item_order))
    prod = np.clip(np.rint(lvl * (cat["n"] - 1)), 0, cat["n"] - 1).astype(np.int64)
    rows = np.arange(len(prod))
    for _ in range(12):  # one line per product: move a repeated product to a neighbour in the catalog
        perm = np.lexsort((prod[rows], item_order[rows]))
        o_sorted, p_sorted = item_order[rows][perm], prod[rows][perm]
        same = np.zeros(len(perm), dtype=bool)
        same[1:] = (o_sorted[1:] == o_sorted[:-1]) & (p_sorted[1:] == p_sorted[:-1])
        if not same.any():
            break
        hit = rows[perm[same]]
        step = rng.integers(1, 12, len(hit))
        prod[hit] = np.where(prod[hit] + step < cat["n"], prod[hit] + step, prod[hit] - step)
        rows = rows[np.isin(item_order[rows], item_order[hit])]
    qty = rng.choice(np.arange(1, 6), len(item_order), p=[0.78, 0.14, 0.05, 0.02, 0.01])
    price = cat["cents"][prod, o_cur[item_order]]
    subtotal = np.bincount(item_order, weights=(price * qty).astype(np.float64), minlength=n).astype(np.int64)
    return item_order, prod, qty, price, subtotal


# --------------------------------------------------------------------------------------------------
# lifecycle and events


def _lifecycle(rng, src: np.ndarray, ts: np.ndarray):
    """Outcome and event times per order.

    outcome: 0 delivered, 1 cancelled before delivery, 2 returned after delivery, 3 abandoned cart (eSputnik).
    """
    n = len(src)
    r = rng.random(n)
    outcome = np.where(r < 0.05, 1, np.where(r < 0.09, 2, 0))
    outcome = np.where((src == ESPUTNIK) & (rng.random(n) < 0.10), 3, outcome)
    ship = ts + (rng.uniform(0.2, 3.0, n) * DAY).astype(np.int64)
    deliver = ship + (rng.uniform(1.0, 6.0, n) * DAY).astype(np.int64)
    cancel = ts + (rng.uniform(0.02, 2.0, n) * DAY).astype(np.int64)
    ret = deliver + (rng.uniform(3.0, 30.0, n) * DAY).astype(np.int64)
    return outcome, ship, deliver, cancel, ret


@dataclass
class _Events:
    """Records of one source before rendering: which order, which state, when."""

    idx: np.ndarray  # order index
    rtype: np.ndarray  # source-specific record type
    ts: np.ndarray  # the record's own time (its file period)
    first: np.ndarray  # first record of its order (goes to the "orders" stream, except Brevo updates)
    bad: np.ndarray  # reason index, -1 for good records
    badv: np.ndarray  # variant of the bad record
    badcsv: np.ndarray  # malformed record placed in a CSV file (broken JSON cell)

    @classmethod
    def good(cls, idx, rtype, ts) -> _Events:
        n = len(idx)
        first = np.zeros(n, dtype=bool)
        first[np.unique(idx, return_index=True)[1]] = True
        return cls(idx, rtype, ts, first, np.full(n, -1), np.zeros(n, np.int64), np.zeros(n, bool))

    def extend(self, other: _Events) -> _Events:
        return _Events(
            *[
                np.concatenate([getattr(self, f), getattr(other, f)])
                for f in ("idx", "rtype", "ts", "first", "bad", "badv", "badcsv")
            ]
        )


def _mutate(source: str, reason: str, variant: int, text: str) -> str:
    """Make a valid record bad for exactly `reason` (and for no reason tested before it)."""
    if reason == "malformed_json":
        return text[: max(8, len(text) // 2)].rstrip()
    d = json.loads(text)

    def bad_date(value: str) -> str:  # a calendar date that does not exist
        return value[:4] + ("-02-30" if variant % 2 == 0 else "-13-05") + value[10:]

    if source == "esputnik":
        if reason == "missing_required_field":
            d.pop("externalOrderId")
        elif reason == "invalid_type":
            d["totalCost"] = ("abc", "N/A", "twelve")[variant % 3]
        elif reason == "invalid_timestamp":
            d["date"] = d["date"][:19] if variant % 2 == 0 else bad_date(d["date"])
        elif reason == "missing_contact":
            d.pop("email", None)
            d.pop("phone", None)
        elif reason == "unknown_status":
            d["status"] = "LOST"
        elif reason == "negative_amount":
            d["totalCost"] = -round(abs(float(d["totalCost"])) or 1.0, 2)
        elif reason == "invalid_quantity":
            d["items"][0]["quantity"] = (0, 1.5)[variant % 2]
        elif reason == "unknown_currency":
            d["currency"] = "XYZ"
        else:
            raise ValueError(reason)
    elif source == "brevo":
        if reason == "invalid_type":
            d["financial"]["subtotal"] = ("n/a", "abc")[variant % 2]
        elif reason == "invalid_timestamp":
            d["date"] = bad_date(d["date"])
        elif reason == "missing_contact":
            d.pop("email")
        elif reason == "unknown_status":
            d["status"] = "Teleported"
        elif reason == "invalid_quantity":
            d["products"][0]["quantity"] = (0, 1.5)[variant % 2]
        elif reason == "unknown_currency":
            d["financial"]["currency"] = "XYZ"
        else:
            raise ValueError(reason)
    else:
        if reason == "missing_required_field":
            d.pop("OriginalId")
        elif reason == "invalid_type":
            d["OrderTotal"] = ("abc", "N/A")[variant % 2]
        elif reason == "invalid_timestamp":
            d["OrderPlacementDate"] = bad_date(d["OrderPlacementDate"])
        elif reason == "inconsistent_state":
            if variant % 2 == 0:  # IsCompleted without OrderCompletedDate
                d["OrderCompletedDate"] = None
            else:  # cancelled/returned while still flagged completed
                d["IsCancelledOrReturned"] = True
                d["OrderCancelledDate"] = d["LastUpdate"]
        elif reason == "negative_amount":
            d["OrderTotal"] = -round(abs(float(d["OrderTotal"])) or 1.0, 2)
        elif reason == "invalid_quantity":
            d["Products"][0]["Quantity"] = (0, 1.5)[variant % 2]
        else:
            raise ValueError(reason)
    return _dumps(d)


# --------------------------------------------------------------------------------------------------
# main entry point


def generate(
    out_dir: Path,
    orders: int,
    customers: int | None = None,
    seed: int = 42,
    *,
    end_date: date = DEFAULT_END_DATE,
    bad_rate: float = 0.01,
    period: str | None = None,
    overwrite: bool = False,
) -> GenerateSummary:
    """Write realistic raw exports of `orders` orders by a pool of `customers` people (default orders // 4).

    History: the 730 days ending on `end_date` (inclusive, UTC). Output is byte-identical for the same
    arguments. `period` (day | week | month) is the time span of one file; by default it follows the volume
    (day from ~130k orders, week from ~13k, else month). About `bad_rate` of the records are bad, every
    SPEC §4 reason code at least once when orders >= 1000. Refuses to write into non-empty `<source>`
    folders of `out_dir` unless `overwrite`, which first deletes those three folders.
    """
    if orders < 0:
        raise ValueError("orders must not be negative")
    if customers is not None and customers < 1:
        raise ValueError("customers must be at least 1")
    if period not in (None, "day", "week", "month"):
        raise ValueError("period must be day, week or month")
    out_dir = Path(out_dir)
    for source in SOURCES:
        target = out_dir / source
        if target.exists() and any(target.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{target} is not empty (pass overwrite=True to replace it)")
            shutil.rmtree(target)
    m = customers if customers is not None else max(1, orders // 4)
    if period is None:
        per_source_day = orders / 3 / HISTORY_DAYS
        period = "day" if per_source_day >= 60 else "week" if per_source_day * 7 >= 60 else "month"
    if orders <= PART_ORDERS:
        return _Generator(out_dir, orders, m, seed, end_date, bad_rate, period).run()
    # Large data sets are written in parts of at most PART_ORDERS orders (memory stays that of one part); each
    # part has its own customers, order ids and file names, so together they are one shop's history.
    parts = -(-orders // PART_ORDERS)
    summaries = []
    for part in range(parts):
        n_part = orders // parts + (1 if part < orders % parts else 0)
        m_part = m // parts + (1 if part < m % parts else 0)
        base = part * (m // parts) + min(part, m % parts)
        generator = _Generator(out_dir, n_part, max(1, m_part), seed + part, end_date, bad_rate, period, part, base)
        summaries.append(generator.run())
    return _combine(summaries, orders, m, seed)


class _Generator:
    def __init__(
        self,
        out_dir: Path,
        n: int,
        m: int,
        seed: int,
        end: date,
        bad_rate: float,
        period: str,
        part: int = 0,
        customer_base: int = 0,
    ):
        self.out_dir, self.n, self.m, self.bad_rate, self.period = out_dir, n, m, bad_rate, period
        # part k of a data set generated in parts: its customers are numbered from customer_base, its orders
        # from k × 10M, its files named `...-part<k>`
        self.part, self.customer_base, self.order_base = part, customer_base, part * PART_ORDER_SPAN
        self.rng = np.random.default_rng(seed)
        self.cal = _Calendar.build(end)
        self.summary = GenerateSummary(
            out_dir=out_dir,
            seed=seed,
            orders=n,
            customers=m,
            start_date=date.fromisoformat(str(self.cal.start_day)),
            end_date=end,
            period=period,
            records_per_source={s: 0 for s in SOURCES},
            orders_per_source={s: 0 for s in SOURCES},
            updates_per_source={s: 0 for s in SOURCES},
            duplicates_per_source={s: 0 for s in SOURCES},
            bad_records={r: 0 for r in REASON_CODES},
            bad_records_by_source={s: {r: 0 for r in REASON_CODES} for s in SOURCES},
        )
        days = self.cal.start_day + np.arange(self.cal.n_days)
        self.period_starts = np.unique(self._period_start(days))
        # file names carry the period's first day, never a day before the history starts
        self.period_text = [str(max(d, self.cal.start_day)) for d in self.period_starts]
        n_p = len(self.period_starts)
        self.kinds: dict[str, list[str]] = {}
        for s, source in enumerate(SOURCES):
            kinds = ["csv" if i % 3 == 1 else "ndjson" for i in range(n_p)]
            specials = SPECIAL_KINDS[source]
            for j, kind in enumerate(specials):
                pos = min(n_p - 1, int((j + 1) * n_p / (len(specials) + 1)) + s)
                while kinds[pos] not in ("ndjson", "csv") and pos + 1 < n_p:
                    pos += 1
                kinds[pos] = kind
            self.kinds[source] = kinds
        self.periods_of_kind = {
            (source, kind): [i for i, k in enumerate(ks) if k == kind]
            for source, ks in self.kinds.items()
            for kind in ("ndjson", "csv")
        }

    # ---------------------------------------------------------------------------------------- periods
    def _period_start(self, days: np.ndarray) -> np.ndarray:
        if self.period == "day":
            return days
        if self.period == "week":
            return days - ((days - EPOCH_DAY0).astype(np.int64) + 3) % 7
        return days.astype("datetime64[M]").astype("datetime64[D]")

    def _period_of(self, ts: np.ndarray) -> np.ndarray:
        days = EPOCH_DAY0 + (np.asarray(ts, dtype=np.int64) // DAY).astype("timedelta64[D]")
        return np.searchsorted(self.period_starts, self._period_start(days), side="right") - 1

    def _ts_in_period(self, period: int) -> int:
        lo = max(int((self.period_starts[period] - EPOCH_DAY0).astype(np.int64)) * DAY, self.cal.start_ts)
        if period + 1 < len(self.period_starts):
            hi = int((self.period_starts[period + 1] - EPOCH_DAY0).astype(np.int64)) * DAY - 1
        else:
            hi = self.cal.end_ts
        return lo + int(self.rng.integers(0, hi - lo + 1))

    def _pick_period(self, source: str, kind: str) -> int:
        cands = self.periods_of_kind[source, kind]
        return cands[int(self.rng.integers(0, len(cands)))]

    # -------------------------------------------------------------------------------------------- run
    def run(self) -> GenerateSummary:
        if self.n == 0:
            return self.summary
        rng, cal, n, m = self.rng, self.cal, self.n, self.m
        self.catalog = _catalog(rng)
        # who buys how often and when: acquisition day, a lifetime, a heavy-tailed purchase rate
        home = rng.choice(3, m, p=[0.4, 0.3, 0.3])
        rate = rng.lognormal(0.0, 1.3, m)
        t0 = cal.sample_days(rng.random(m))
        t1 = np.minimum(t0 + rng.exponential(450.0, m).astype(np.int64), cal.n_days - 1)
        exposure = np.where(t0 > 0, cal.cdf[t1] - cal.cdf[np.maximum(t0 - 1, 0)], cal.cdf[t1]) + 1e-4
        if n >= m:
            weight = rate * exposure
            o_cust = np.concatenate([np.arange(m), rng.choice(m, n - m, p=weight / weight.sum())])
            first = np.arange(n) < m
        else:
            o_cust = np.sort(rng.choice(m, n, replace=False))
            first = np.ones(n, dtype=bool)
        day = np.where(first, t0[o_cust], cal.sample_days(rng.random(n), t0[o_cust], t1[o_cust]))
        o_ts = cal.start_ts + day.astype(np.int64) * DAY + _time_of_day(rng, n)
        order = np.lexsort((o_cust, o_ts))
        o_cust, o_ts = o_cust[order], o_ts[order]
        self.cust = cust = _make_customers(
            rng, m, np.bincount(o_cust, minlength=m), home, self.customer_base, self.part
        )
        # source of each order: the customer's shop, or one of two for people who buy in both
        rank, _ = _group_rank_and_cumsum(o_cust, o_ts)
        c_home, c_cross = home[o_cust], cust.cross[o_cust]
        other = np.where(
            c_cross == 1,
            np.where(c_home == BREVO, ESPUTNIK, BREVO),
            np.where(c_home == ESPUTNIK, BONIFIQ, ESPUTNIK),
        )
        use_other = (c_cross > 0) & ((rank == 1) | ((rank >= 2) & (rng.random(n) < 0.5)))
        o_src = np.where(use_other, other, c_home).astype(np.int8)
        o_cur = _currency(o_src, cust.country[o_cust], cust.euro_buyer[o_cust])
        items = _items(rng, self.catalog, cust, o_cust, o_cur)
        self.o = _Orders(o_src, o_cust, o_ts, o_cur, *items, np.full(n, -1), np.zeros(n, np.int64))
        self.outcome, self.ship, self.deliver, self.cancel, self.ret = _lifecycle(rng, o_src, o_ts)
        self.n_good = n
        events = [self._events(s) for s in range(3)]
        dups = [self._dups(ev) for ev in events]
        good_records = sum(len(ev.idx) + len(d[0]) for ev, d in zip(events, dups, strict=True))
        plan = self._plan_bad(good_records)
        for reason, source, _ in plan:
            self.summary.bad_records[reason] += 1
            self.summary.bad_records_by_source[source][reason] += 1
        bases = self._add_bad_bases([p for p in plan if not self._is_brevo_update(p)])
        self._ids()
        o = self.o
        for s, source in enumerate(SOURCES):
            good = (o.src == s) & (o.bad < 0)
            self.summary.orders_per_source[source] = int(good.sum())
        self.summary.abandoned_carts = int(((self.outcome == 3) & (o.bad < 0)).sum())
        builders = (self._brevo, self._bonifiq, self._esputnik)
        with ThreadPoolExecutor(max_workers=1) as self.pool:
            self.pending: list = []
            for s, source in enumerate(SOURCES):
                ev = events[s].extend(bases[s])
                frames = builders[s](ev, [p for p in plan if p[1] == source and self._is_brevo_update(p)])
                frames = self._with_dups(source, frames, *dups[s])
                self._write_source(source, frames)
            for future in self.pending:
                future.result()
        self.summary.files.sort()
        self.summary.file_kinds = {p: self.summary.file_kinds[p] for p in self.summary.files}
        self.summary.bad_record_locations.sort(key=lambda b: (b.source, b.path, b.index))
        return self.summary

    @staticmethod
    def _is_brevo_update(plan_item) -> bool:
        reason, source, _ = plan_item
        return source == "brevo" and reason in ("missing_required_field", "unknown_order")

    def _events(self, s: int) -> _Events:
        """The good records of source s, time-sorted."""
        o, rng, end, n = self.o, self.rng, self.cal.end_ts, len(self.o.src)
        mine = o.src == s
        done = mine & ((self.outcome == 0) | (self.outcome == 2))
        canc = mine & (self.outcome == 1)
        retd = mine & (self.outcome == 2)
        if s == BREVO:  # 0 full order, 1 Shipped, 2 Delivered, 3 Cancelled, 4 Returned
            shipped = done & (rng.random(n) < 0.9)
            parts = [
                (mine, 0, o.ts),
                (shipped, 1, self.ship),
                (done, 2, self.deliver),
                (canc, 3, self.cancel),
                (retd, 4, self.ret),
            ]
        elif s == BONIFIQ:  # 0 pending, 1 completed, 2 cancelled, 3 returned; time = LastUpdate
            lag_done = self.deliver + rng.integers(300, 36_000, n)
            lag_canc = self.cancel + rng.integers(60, 7_200, n)
            lag_ret = self.ret + rng.integers(300, 36_000, n)
            first_event = np.where(canc, lag_canc, lag_done)
            sent_pending = mine & ((rng.random(n) < 0.45) | (first_event > end))
            parts = [
                (sent_pending, 0, o.ts + rng.integers(60, 1_800, n)),
                (done, 1, lag_done),
                (canc, 2, lag_canc),
                (retd, 3, lag_ret),
            ]
        else:  # 0 INITIALIZED, 1 IN_PROGRESS, 2 DELIVERED, 3 CANCELLED, 4 ABANDONED_SHOPPING_CART
            live = mine & (self.outcome != 3)
            in_progress = done & (rng.random(n) < 0.6)
            parts = [
                (live, 0, o.ts),
                (in_progress, 1, self.ship),
                (done, 2, self.deliver),
                (canc, 3, self.cancel),
                (retd, 3, self.ret),
                (mine & (self.outcome == 3), 4, o.ts),
            ]
        idx = np.concatenate([np.nonzero(mask)[0] for mask, _, _ in parts])
        rtype = np.concatenate([np.full(int(mask.sum()), t, dtype=np.int64) for mask, t, _ in parts])
        ts = np.concatenate([times[mask] for mask, _, times in parts])
        keep = ts <= end
        idx, rtype, ts = idx[keep], rtype[keep], ts[keep]
        perm = np.lexsort((rtype, idx, ts))
        return _Events.good(idx[perm], rtype[perm], ts[perm])

    def _dups(self, ev: _Events):
        """Exact re-sends: a few records sent again, unchanged, a little later."""
        pick = self.rng.random(len(ev.idx)) < 0.006
        dup_ts = ev.ts[pick] + (self.rng.uniform(0.05, 3.0, int(pick.sum())) * DAY).astype(np.int64)
        keep = dup_ts <= self.cal.end_ts
        return np.nonzero(pick)[0][keep], dup_ts[keep]

    # ------------------------------------------------------------------------------------ bad records
    def _plan_bad(self, good_records: int) -> list[tuple[str, str, int]]:
        """(reason, source, variant) per bad record: ~bad_rate of the records, all 11 from 1000 orders."""
        n_bad = int(round(self.bad_rate * good_records)) if self.bad_rate > 0 else 0
        if self.n >= 1000 and self.bad_rate > 0:
            n_bad = max(n_bad, len(REASON_CODES))
        if n_bad >= len(REASON_CODES):
            weights = np.array([3, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1], dtype=float)
            counts = 1 + self.rng.multinomial(n_bad - len(REASON_CODES), weights / weights.sum())
        else:
            counts = (np.arange(len(REASON_CODES)) < n_bad).astype(np.int64)
        allowed = {
            "malformed_json": ("esputnik", "brevo", "bonifiq"),
            "missing_required_field": ("esputnik", "brevo", "bonifiq"),
            "invalid_type": ("esputnik", "bonifiq", "brevo"),
            "invalid_timestamp": ("esputnik", "brevo", "bonifiq"),
            "missing_contact": ("esputnik", "brevo"),
            "inconsistent_state": ("bonifiq",),
            "unknown_status": ("esputnik", "brevo"),
            "negative_amount": ("esputnik", "bonifiq"),
            "invalid_quantity": ("esputnik", "brevo", "bonifiq"),
            "unknown_currency": ("esputnik", "brevo"),
            "unknown_order": ("brevo",),
        }
        plan = []
        for reason, count in zip(REASON_CODES, counts, strict=True):
            sources = allowed[reason]
            plan.extend((reason, sources[k % len(sources)], k // len(sources)) for k in range(int(count)))
        return plan

    def _add_bad_bases(self, plan) -> list[_Events]:
        """Orders of their own for the bad records, each a single record in an ndjson (or csv) file."""
        empty = _Events(*(np.zeros(0, dtype=t) for t in (np.int64, np.int64, np.int64, bool, np.int64, np.int64, bool)))
        if not plan:
            return [empty, empty, empty]
        o, rng, k = self.o, self.rng, len(plan)
        src = np.array([SOURCES.index(s) for _, s, _ in plan], dtype=np.int8)
        in_csv = np.array([r == "malformed_json" and v % 3 == 2 for r, _, v in plan])
        rec_ts = np.array(
            [
                self._ts_in_period(self._pick_period(SOURCES[s], "csv" if c else "ndjson"))
                for s, c in zip(src, in_csv, strict=True)
            ],
            dtype=np.int64,
        )
        cust = np.empty(k, dtype=np.int64)
        for s in range(3):
            mask = src == s
            pool = o.cust[o.src == s]
            if not len(pool):
                pool = np.arange(self.cust.n)
            cust[mask] = pool[rng.integers(0, len(pool), int(mask.sum()))]
        placed = np.where(src == BONIFIQ, rec_ts - 2 * DAY, rec_ts)  # BonifiQ sends it completed (LastUpdate)
        cur = _currency(src, self.cust.country[cust], self.cust.euro_buyer[cust])
        items = _items(rng, self.catalog, self.cust, cust, cur)
        base = len(o.src)
        self.o = _Orders(
            np.concatenate([o.src, src]),
            np.concatenate([o.cust, cust]),
            np.concatenate([o.ts, placed]),
            np.concatenate([o.cur, cur]),
            np.concatenate([o.item_order, items[0] + base]),
            np.concatenate([o.item_prod, items[1]]),
            np.concatenate([o.item_qty, items[2]]),
            np.concatenate([o.item_price, items[3]]),
            np.concatenate([o.subtotal, items[4]]),
            np.concatenate([o.bad, [REASON_CODES.index(r) for r, _, _ in plan]]),
            np.concatenate([o.bad_variant, [v for _, _, v in plan]]),
        )
        self.outcome = np.concatenate([self.outcome, np.zeros(k, np.int64)])
        self.ship = np.concatenate([self.ship, rec_ts - DAY])
        self.deliver = np.concatenate([self.deliver, rec_ts - 3_600])
        self.cancel = np.concatenate([self.cancel, rec_ts])
        self.ret = np.concatenate([self.ret, rec_ts])
        out = []
        for s in range(3):
            sel = np.nonzero(src == s)[0]
            rtype = np.full(len(sel), 1 if s == BONIFIQ else 0, dtype=np.int64)
            out.append(
                _Events(
                    base + sel,
                    rtype,
                    rec_ts[sel],
                    np.ones(len(sel), bool),
                    self.o.bad[base + sel],
                    self.o.bad_variant[base + sel],
                    in_csv[sel],
                )
            )
        return out

    def _ids(self) -> None:
        o = self.o
        seq = np.zeros(len(o.src), dtype=np.int64)
        for s in range(3):
            idx = np.nonzero(o.src == s)[0]  # good orders in time order, then the bad bases
            seq[idx] = np.arange(len(idx)) + self.order_base
        self.brevo_count = int((o.src == BREVO).sum())
        year = (EPOCH_DAY0 + (o.ts // DAY).astype("timedelta64[D]")).astype("datetime64[Y]").astype(np.int64) + 1970
        brevo_id = pl.format("ORD-{}-{}", pl.Series(year), pl.Series(seq + 1).cast(pl.String).str.zfill(6))
        self.order_id = pl.select(
            pl.when(pl.Series(o.src == BREVO))
            .then(brevo_id)
            .when(pl.Series(o.src == BONIFIQ))
            .then(pl.Series(seq + 1_000_001).cast(pl.String))
            .otherwise(pl.Series(seq + 500_001).cast(pl.String))
        ).to_series()

    # ---------------------------------------------------------------------------------- shared pieces
    def _item_table(self, s: int) -> list[str]:
        """JSON text of one order line for every (product, currency, quantity), in the source's shape.

        Brevo has two shapes: the full "Ordine con Calcolo Fedeltà" line, then the seed's basic line."""
        cat = self.catalog
        n = cat["n"]
        cents = cat["cents"]  # (product, currency)
        qty = np.arange(1, 6)
        points = np.floor(
            cents[:, :, None] * qty[None, None, :] / 100.0 * FX_TO_USD[None, :, None] * cat["multiplier"][:, None, None]
        ).astype(np.int64)
        full, basic = [], []
        for p in range(n):
            for c in range(4):
                money = f"{cents[p, c] // 100}.{cents[p, c] % 100:02d}"
                for q in range(1, 6):
                    if s == BREVO:
                        full.append(
                            f'{cat["brevo_head"][p]},"quantity":{q},"price":{money},'
                            f'"category":{cat["categories_json"][p]},"brand":"{cat["brand"][p]}",'
                            f'"loyaltyPointsEarned":{points[p, c, q - 1]},'
                            f'"loyaltyMultiplier":{cat["multiplier_text"][p]}}}'
                        )
                        basic.append(
                            f'{{"id":"{cat["id"][p]}","name":"{cat["name"][p]}","quantity":{q},"price":{money},'
                            f'"category":{cat["categories_json"][p]}}}'
                        )
                    elif s == BONIFIQ:
                        full.append(
                            f'{cat["bonifiq_head"][p]},"Quantity":{q},"Price":{money},'
                            f'"Category":"{cat["category_first"][p]}"}}'
                        )
                    else:
                        full.append(f'{cat["esputnik_head"][p]},"quantity":{q},"cost":{money}{cat["esputnik_tail"][p]}')
        return full + basic

    def _items_text(self, s: int, order_idx: np.ndarray, basic: np.ndarray | None = None) -> pl.Series:
        """The item list of each order of `order_idx` (sorted) as JSON text in the source's shape."""
        o = self.o
        sel = np.isin(o.item_order, order_idx)
        io_, prod, qty = o.item_order[sel], o.item_prod[sel], o.item_qty[sel]
        key = (prod * 4 + o.cur[io_]) * 5 + (qty - 1)
        if s == BREVO:
            key = key + np.where(basic[np.searchsorted(order_idx, io_)], self.catalog["n"] * 20, 0)
        frame = pl.DataFrame({"o": io_, "j": _pick(self._item_table(s), key)})
        joined = frame.group_by("o", maintain_order=True).agg(pl.col("j").str.join(","))
        return joined.select(pl.concat_str([pl.lit("["), pl.col("j"), pl.lit("]")])).to_series()

    def _campaign(self, idx: np.ndarray) -> np.ndarray:
        """Campaign index per order (-1 none), following the calendar."""
        days = EPOCH_DAY0 + (self.o.ts[idx] // DAY).astype("timedelta64[D]")
        month = days.astype("datetime64[M]").astype(np.int64) % 12
        dom = (days - days.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1
        u = self.rng.random(len(idx))
        alt = self.rng.choice([3, 5, 5], len(idx))
        black_friday = ((month == 10) & (dom >= 24)) | ((month == 11) & (dom <= 1))
        xmas = (month == 11) & (dom >= 2) & (dom <= 24)
        return np.select(
            [
                black_friday & (u < 0.7),
                xmas & (u < 0.5),
                (month == 4) & (dom <= 12) & (u < 0.3),
                ((month == 8) | ((month == 7) & (dom >= 15))) & (u < 0.25),
                np.isin(month, (5, 6, 7)) & (u < 0.3),
                u < 0.15,
            ],
            [0, 1, 6, 4, 2, alt],
            -1,
        )

    def _meta(self, ev: _Events, pos: np.ndarray, stream) -> dict:
        """Bookkeeping columns of the records ev[pos] (all start with an underscore; never written)."""
        return {
            "_ev": pl.Series(pos, dtype=pl.Int64),
            "_ts": pl.Series(ev.ts[pos], dtype=pl.Int64),
            "_stream": stream if isinstance(stream, pl.Series) else pl.lit(stream),
            "_dup": pl.lit(False),
            "_bad": pl.Series(ev.bad[pos], dtype=pl.Int64),
            "_badv": pl.Series(ev.badv[pos], dtype=pl.Int64),
            "_badcsv": pl.Series(ev.badcsv[pos], dtype=pl.Boolean),
            "_order": pl.Series(ev.idx[pos], dtype=pl.Int64),
            "_oid": self.order_id.gather(ev.idx[pos]),
            "_label": pl.lit(None, dtype=pl.String),
            "_json": pl.lit(None, dtype=pl.String),
        }

    # ------------------------------------------------------------------------------------------ Brevo
    def _brevo(self, ev: _Events, update_plan) -> list[tuple[tuple, pl.DataFrame]]:
        rng, o, cust = self.rng, self.o, self.cust
        idx_all = np.nonzero(o.src == BREVO)[0]
        n = len(idx_all)
        c, ts, cur, sub = o.cust[idx_all], o.ts[idx_all], o.cur[idx_all], o.subtotal[idx_all]
        country = cust.country[c]
        basic = (country == US) & (rng.random(n) < 0.08) & (o.bad[idx_all] < 0)  # the seed's "Ordine Base"
        rank, _ = _group_rank_and_cumsum(c, ts)
        first_purchase = rank == 0
        coupon = np.where(
            rng.random(n) < np.where(first_purchase, 0.02, 0.12), rng.integers(0, len(BREVO_COUPONS), n), -1
        )
        coupon = np.where(basic, -1, coupon)
        coupon_value = np.array([v for _, v in BREVO_COUPONS])[np.maximum(coupon, 0)] * 100
        promo = (coupon < 0) & ~basic & (rng.random(n) < 0.08)
        disc = np.where(
            coupon >= 0,
            np.minimum(coupon_value, sub),
            np.where(promo, np.rint(sub * rng.choice([0.1, 0.15, 0.2], n)), 0),
        ).astype(np.int64)
        method = rng.choice(3, n, p=[0.7, 0.2, 0.1])
        ship = np.where(
            method == 2,
            0,
            np.where(method == 1, 1499, np.where(sub - disc >= 10_000, 0, rng.choice([499, 599, 999], n))),
        )
        tax_rate = np.array([TAX_RATE[k] for k in range(len(COUNTRIES))])[country]
        tax = np.rint((sub - disc) * tax_rate).astype(np.int64)
        total = sub - disc + ship + tax
        # source-reported loyalty figures, roughly what a loyalty engine would have said at checkout
        sel = np.isin(o.item_order, idx_all)
        weighted = np.bincount(
            np.searchsorted(idx_all, o.item_order[sel]),
            weights=o.item_price[sel] * o.item_qty[sel] * self.catalog["multiplier"][o.item_prod[sel]],
            minlength=n,
        )
        base_pts = weighted / 100.0 * FX_TO_USD[cur] * (sub - disc) / np.maximum(sub, 1)
        subscriber = cust.subscriber[c] & ~basic
        referral = first_purchase & (rng.random(n) < 0.08) & ~basic
        month = (EPOCH_DAY0 + (ts // DAY).astype("timedelta64[D]")).astype("datetime64[M]").astype(np.int64) % 12
        birthday = (month == cust.birthday_month[c]) & (rng.random(n) < 0.3) & ~basic
        bonus = np.where(rng.random(n) < 0.1, rng.choice([50, 100], n), 0)
        birthday_b = np.where(birthday, rng.choice([200, 500], n), 0)
        referral_b = np.where(referral, 250, 0)
        sub_b = np.where(subscriber, 50, 0)
        granted = bonus + birthday_b + referral_b + sub_b
        redeemed = np.where(coupon >= 0, disc * 20 // 100, 0)
        _, (cum_pts, cum_granted, cum_red) = _group_rank_and_cumsum(
            c,
            ts,
            np.where(basic, 0.0, base_pts),
            np.where(basic, 0, granted).astype(np.float64),
            redeemed.astype(np.float64),
        )
        tier_before = np.searchsorted(TIER_MIN, cum_pts, side="right") - 1
        points = np.floor(base_pts * TIER_MULT[tier_before]).astype(np.int64)
        tier_after = np.searchsorted(TIER_MIN, cum_pts + points, side="right") - 1
        balance = np.maximum(0, np.floor(cum_pts + points + cum_granted + granted - cum_red - redeemed))
        status = np.where(basic, -1, rng.choice(3, n, p=[0.75, 0.2, 0.05]))
        meta_source = rng.choice(3, n, p=[0.55, 0.35, 0.10])
        agent = np.where(meta_source == 1, len(BREVO_USER_AGENTS), rng.integers(0, len(BREVO_USER_AGENTS), n))
        flat = {
            "id": self.order_id.gather(idx_all),
            "email": cust.email_brevo.gather(c),
            "customerId": _null_where(
                pl.select(pl.format("CUST-{}", pl.Series(c + self.customer_base + 10_000))).to_series(), basic
            ),
            "loyaltyId": _null_where(
                pl.select(pl.format("LYL-{}", pl.Series((c + self.customer_base) * 7 + 100_003))).to_series(), basic
            ),
            "billing.name": pl.select(
                pl.concat_str([cust.first_name.gather(c), pl.lit(" "), cust.last_name.gather(c)])
            ).to_series(),
            "billing.phone": pl.select(pl.concat_str([pl.lit("+"), cust.phone.gather(c)])).to_series(),
            "billing.city": cust.city.gather(c),
            "billing.country": _pick(COUNTRIES, country),
            "shipping.cost": _money(ship),
            "shipping.method": _pick(BREVO_SHIP_METHOD, np.where(basic, -1, method)),
            "products": self._items_text(BREVO, idx_all, basic),
            "financial.subtotal": _money(sub, basic),
            "financial.shipping": _money(ship, basic),
            "financial.tax": _money(tax, basic),
            "financial.discount": _money(disc, basic),
            "financial.total": _money(total, basic),
            "financial.currency": _pick(CURRENCIES, np.where(basic, -1, cur)),
            "financial.paymentMethod": _pick(
                BREVO_PAYMENT, np.where(basic, -1, rng.choice(5, n, p=[0.5, 0.25, 0.1, 0.1, 0.05]))
            ),
            "financial.paymentStatus": _pick(("Completed", "Completed", "Pending"), status),
            "loyalty.pointsEarned": _text(points, basic),
            "loyalty.bonusPoints": _text(bonus, basic),
            "loyalty.pointsMultiplier": _pick(TIER_MULT_TEXT, np.where(basic, -1, tier_before)),
            "loyalty.tierBefore": _pick(TIERS, np.where(basic, -1, tier_before)),
            "loyalty.tierAfter": _pick(TIERS, np.where(basic, -1, tier_after)),
            "loyalty.totalPointsBalance": _text(balance, basic),
            "loyalty.couponUsed": _pick([k for k, _ in BREVO_COUPONS], coupon),
            "loyalty.couponDiscount": _money(disc, coupon < 0),
            "loyalty.birthdayBonus": _text(birthday_b, ~birthday),
            "loyalty.referralBonus": _text(referral_b, ~referral),
            "loyalty.subscriptionBonus": _text(sub_b, ~subscriber),
            "metadata.source": _pick(BREVO_SOURCE_META, np.where(basic, -1, meta_source)),
            "metadata.campaign": _pick(CAMPAIGNS, np.where(basic, -1, self._campaign(idx_all))),
            "metadata.referrer": _pick(
                BREVO_REFERRERS,
                np.where(
                    basic,
                    -1,
                    rng.choice(len(BREVO_REFERRERS), n, p=[0.2, 0.15, 0.15, 0.15, 0.15, 0.15, 0.05]),
                ),
            ),
            "metadata.userAgent": _pick((*BREVO_USER_AGENTS, "Mobile App"), np.where(basic, -1, agent)),
            "metadata.firstPurchase": _bool(first_purchase, basic),
            "metadata.returningCustomer": _bool(~first_purchase, basic),
            "metadata.isReferralOrder": _bool(referral, ~referral),
            "metadata.referralSource": _pick(
                ("Friend Referral", "Instagram Referral", "Newsletter Referral"),
                np.where(referral, rng.integers(0, 3, n), -1),
            ),
            "subscription.id": _null_where(
                pl.select(pl.format("SUB-{}", pl.Series(c + 500_000))).to_series(), ~subscriber
            ),
            "subscription.type": _pick(("Monthly",), np.where(subscriber, 0, -1)),
            "subscription.frequency": _text(np.full(n, 30), ~subscriber),
            "subscription.isRecurring": _bool(np.ones(n, bool), ~subscriber),
            "revenue": _money(sub + ship, ~basic),
            "date": _ts_utc(ts),
            "status": _pick(("Completed", "Processing", "Pending"), status),
        }
        orders_flat = pl.DataFrame(flat)
        full = np.nonzero(ev.rtype == 0)[0]
        orders_rec = orders_flat[np.searchsorted(idx_all, ev.idx[full])].with_columns(**self._meta(ev, full, "orders"))
        # partial status updates (the seed's "Evasione Ordine" / "Completamento Ordine", cancels, returns)
        upd = np.nonzero(ev.rtype != 0)[0]
        k = len(upd)
        u_order, u_type, u_ts = ev.idx[upd], ev.rtype[upd], ev.ts[upd]
        is_ship, is_del = u_type == 1, u_type == 2
        carrier = np.where(is_ship, rng.integers(0, len(BREVO_CARRIERS), k), -1)
        trk = pl.select(pl.format("TRK{}", pl.Series(rng.integers(100_000_000, 999_999_999, k)))).to_series()
        review = is_del & (rng.random(k) < 0.6)
        expiry = (EPOCH_DAY0 + (self.deliver[u_order] // DAY + 30).astype("timedelta64[D]")).astype(str)
        status_txt = np.select(
            [is_ship, is_del, u_type == 3],
            [0, 1, np.where(rng.random(k) < 0.15, 3, 2)],
            np.where(rng.random(k) < 0.25, 5, 4),
        )
        upd_rec = (
            pl.DataFrame(
                {
                    "id": self.order_id.gather(u_order),
                    "status": _pick(
                        ("Shipped", "Delivered", "Cancelled", "Canceled", "Returned", "Refunded"), status_txt
                    ),
                    "tracking.number": _null_where(trk, ~is_ship),
                    "tracking.carrier": _pick(BREVO_CARRIERS, carrier),
                    "tracking.url": _null_where(
                        pl.select(pl.concat_str([_pick(BREVO_CARRIER_URL, carrier), trk])).to_series(),
                        ~is_ship,
                    ),
                    "fulfillment.date": _ts_utc(u_ts, ~is_ship),
                    "fulfillment.warehouse": _pick(
                        BREVO_WAREHOUSES, np.where(is_ship, rng.integers(0, len(BREVO_WAREHOUSES), k), -1)
                    ),
                    "fulfillment.method": _pick(
                        ("Ground Shipping", "Air Freight"),
                        np.where(is_ship, rng.choice(2, k, p=[0.8, 0.2]), -1),
                    ),
                    "delivery.date": _ts_utc(u_ts, ~is_del),
                    "delivery.signature": _pick(
                        BREVO_SIGNATURE, np.where(is_del & (rng.random(k) < 0.7), rng.integers(0, 3, k), -1)
                    ),
                    "delivery.location": _pick(BREVO_DELIVERY_LOC, np.where(is_del, rng.integers(0, 5, k), -1)),
                    "loyalty.reviewIncentive": _text(np.full(k, 25), ~review),
                    "loyalty.reviewIncentiveExpiry": _null_where(pl.Series(expiry, dtype=pl.String), ~review),
                    "updatedAt": _ts_utc(u_ts, is_ship | is_del),
                }
            )
            .with_columns(
                **self._meta(ev, upd, "updates"),
            )
            .with_columns(
                _label=_pick(("shipped", "delivered", "cancelled", "cancelled", "returned", "returned"), status_txt),
            )
        )
        # bad updates, written as JSON text straight away (they go to ndjson files)
        extra = []
        good_brevo = idx_all[o.bad[idx_all] < 0]
        ndjson_periods = self.periods_of_kind["brevo", "ndjson"]
        pool = good_brevo[self._period_of(o.ts[good_brevo]) < ndjson_periods[-1]]  # orders with a later file
        for j, (reason, _source, _variant) in enumerate(update_plan):
            p = self._pick_period("brevo", "ndjson")
            t = self._ts_in_period(p)
            ghost = f"ORD-{datetime.fromtimestamp(t, UTC).year}-{self.order_base + self.brevo_count + 100_000 + j:06d}"
            if reason == "missing_required_field":  # a Shipped update with no time at all
                oid = ghost
                if len(pool):  # an order placed before, the update in a later ndjson file
                    target = pool[rng.integers(0, len(pool))]
                    after = self._period_of(o.ts[[target]])[0]
                    later = [q for q in ndjson_periods if q > after]
                    t = self._ts_in_period(later[int(rng.integers(0, len(later)))])
                    oid = self.order_id[int(target)]
                number = f"TRK{int(rng.integers(100_000_000, 999_999_999))}"
                record = {
                    "id": oid,
                    "status": "Shipped",
                    "tracking": {"number": number, "carrier": "UPS", "url": BREVO_CARRIER_URL[0] + number},
                }
            else:  # unknown_order: a delivery for an order id that appears nowhere
                when = datetime.fromtimestamp(t, UTC)
                oid = ghost
                record = {
                    "id": oid,
                    "status": "Delivered",
                    "delivery": {
                        "date": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "signature": "Customer",
                        "location": "Front Door",
                    },
                }
            extra.append(
                {
                    "_ev": -1 - j,
                    "_order": -1 - j,
                    "_ts": t,
                    "_stream": "updates",
                    "_dup": False,
                    "_bad": REASON_CODES.index(reason),
                    "_badv": -1,
                    "_badcsv": False,
                    "_oid": oid,
                    "_label": None,
                    "_json": _dumps(record),
                }
            )
        if extra:
            upd_rec = pl.concat(
                [upd_rec, pl.DataFrame(extra, schema={c: upd_rec.schema[c] for c in extra[0]})],
                how="diagonal",
            )
        return [(BREVO_ORDER_FIELDS, orders_rec), (BREVO_UPDATE_FIELDS, upd_rec)]

    # ---------------------------------------------------------------------------------------- BonifiQ
    def _bonifiq(self, ev: _Events, _plan) -> list[tuple[tuple, pl.DataFrame]]:
        rng, o, cust = self.rng, self.o, self.cust
        idx_all = np.nonzero(o.src == BONIFIQ)[0]
        n = len(idx_all)
        c, ts, sub = o.cust[idx_all], o.ts[idx_all], o.subtotal[idx_all]
        rank, _ = _group_rank_and_cumsum(c, ts)
        coupon = np.where(rng.random(n) < np.where(rank > 0, 0.10, 0.02), rng.integers(0, len(BONIFIQ_COUPONS), n), -1)
        value = np.array([v for _, v in BONIFIQ_COUPONS])[np.maximum(coupon, 0)] * 100
        total = sub - np.where(coupon >= 0, np.minimum(value, sub), 0)
        doc = cust.doc_kind[c]
        store = doc > 0
        channel = np.where(store, 2, rng.choice(2, n, p=[0.7, 0.3]))  # site, app, store
        campaign = self._campaign(idx_all)
        meta = pl.concat_str(
            [
                pl.lit('[{"Key":"channel","Value":"'),
                _pick(("site", "app", "store"), channel),
                pl.lit('"}'),
                pl.concat_str(
                    [pl.lit(',{"Key":"campaign","Value":"'), _pick(BONIFIQ_CAMPAIGNS, campaign), pl.lit('"}')]
                ),
                pl.lit("]"),
            ],
            ignore_nulls=True,
        )
        has_email = cust.bonifiq_email[c]
        has_phone = cust.bonifiq_phone[c]
        email = cust.email.gather(c)
        flat = pl.DataFrame(
            {
                "OriginalId": self.order_id.gather(idx_all),
                "OrderPlacementDate": _ts_utc(ts),
                "OrderTotal": _money(total),
                "Customer.OriginalId": pl.select(
                    pl.when(pl.Series(store)).then(cust.document.gather(c)).otherwise(email)
                ).to_series(),
                "Customer.Name": pl.select(
                    pl.concat_str([cust.first_name.gather(c), pl.lit(" "), cust.last_name.gather(c)])
                ).to_series(),
                "Customer.Email": _null_where(email, ~has_email),
                "Customer.Phone": _null_where(
                    pl.select(pl.concat_str([pl.lit("+"), cust.phone.gather(c)])).to_series(), ~has_phone
                ),
                "Products": self._items_text(BONIFIQ, idx_all),
                "Coupon": _pick([k for k, _ in BONIFIQ_COUPONS], coupon),
                "Metadatas": pl.select(meta).to_series(),
                "PaymentMethod": _pick(BONIFIQ_PAYMENT, rng.choice(6, n, p=[0.3, 0.25, 0.05, 0.25, 0.1, 0.05])),
                "Branch": _pick(BONIFIQ_BRANCHES, np.where(store, rng.integers(0, len(BONIFIQ_BRANCHES), n), -1)),
                "SalesPerson": _pick(
                    BONIFIQ_SALESPEOPLE, np.where(store, rng.integers(0, len(BONIFIQ_SALESPEOPLE), n), -1)
                ),
                "_pending_status": rng.integers(0, len(BONIFIQ_PENDING_STATUS), n),
                "_done_status": rng.choice(3, n, p=[0.6, 0.3, 0.1]),
            }
        )
        pos = np.arange(len(ev.idx))
        rows = np.searchsorted(idx_all, ev.idx)
        rec = flat[rows]
        rtype = ev.rtype
        status = np.select(
            [rtype == 0, rtype == 1, rtype == 2],
            [rec["_pending_status"].to_numpy(), 3 + rec["_done_status"].to_numpy(), np.full(len(rtype), 6)],
            7,
        )
        rec = rec.drop("_pending_status", "_done_status").with_columns(
            OrderCompletedDate=_ts_utc(self.deliver[ev.idx], rtype != 1),
            OrderCancelledDate=_ts_utc(np.where(rtype == 3, self.ret[ev.idx], self.cancel[ev.idx]), rtype < 2),
            OrderStatus=_pick((*BONIFIQ_PENDING_STATUS, *BONIFIQ_DONE_STATUS, "Cancelado", "Devolvido"), status),
            IsCompleted=_bool(rtype == 1),
            IsCancelledOrReturned=_bool(rtype >= 2),
            LastUpdate=_ts_utc(ev.ts),
            **self._meta(ev, pos, _pick(("updates", "orders"), ev.first.astype(np.int64))),
        )
        return [(BONIFIQ_FIELDS, rec)]

    # --------------------------------------------------------------------------------------- eSputnik
    def _esputnik(self, ev: _Events, _plan) -> list[tuple[tuple, pl.DataFrame]]:
        rng, o, cust = self.rng, self.o, self.cust
        idx_all = np.nonzero(o.src == ESPUTNIK)[0]
        n = len(idx_all)
        c, sub = o.cust[idx_all], o.subtotal[idx_all]
        disc = np.where(rng.random(n) < 0.12, np.rint(sub * rng.choice([0.05, 0.1, 0.15], n)), 0).astype(np.int64)
        ship = np.where(sub - disc >= 5_000, 0, rng.choice([300, 500, 1_000], n))
        mode = cust.contact_mode[c]
        delivery = rng.choice(5, n, p=[0.35, 0.15, 0.15, 0.25, 0.1])  # nova_poshta only in Ukraine
        flat = pl.DataFrame(
            {
                "externalOrderId": self.order_id.gather(idx_all),
                "externalCustomerId": pl.Series(c + self.customer_base + 70_000).cast(pl.String),
                "totalCost": _money(sub - disc + ship),
                "email": _null_where(cust.email.gather(c), mode == 2),
                "phone": _null_where(cust.phone.gather(c), mode == 1),
                "firstName": cust.first_name.gather(c),
                "lastName": cust.last_name.gather(c),
                "currency": _pick(CURRENCIES, o.cur[idx_all]),
                "shipping": _money(ship),
                "discount": _money(disc),
                "deliveryMethod": _pick(
                    ESPUTNIK_DELIVERY, np.where((delivery == 3) & (cust.country[c] != UA), 0, delivery)
                ),
                "paymentMethod": _pick(ESPUTNIK_PAYMENT, rng.choice(5, n, p=[0.5, 0.2, 0.1, 0.1, 0.1])),
                "deliveryAddress": pl.select(
                    pl.concat_str([cust.street.gather(c), pl.lit(", "), cust.city.gather(c)])
                ).to_series(),
                "items": self._items_text(ESPUTNIK, idx_all),
            }
        )
        rows = np.searchsorted(idx_all, ev.idx)
        country = cust.country[o.cust[ev.idx]]
        month = (EPOCH_DAY0 + (ev.ts // DAY).astype("timedelta64[D]")).astype("datetime64[M]").astype(np.int64) % 12
        summer = (month >= 3) & (month <= 9)
        tz = np.array([TIMEZONES[k] for k in range(len(COUNTRIES))])
        offset = np.where(summer, tz[country, 1], tz[country, 0])
        rec = flat[rows].with_columns(
            status=_pick(ESPUTNIK_STATUS, ev.rtype),
            date=_ts_offset(ev.ts, offset),
            **self._meta(ev, np.arange(len(ev.idx)), _pick(("updates", "orders"), ev.first.astype(np.int64))),
        )
        return [(ESPUTNIK_FIELDS, rec)]

    # ----------------------------------------------------------------------------------------- output
    def _with_dups(self, source: str, frames, dup_pos: np.ndarray, dup_ts: np.ndarray):
        dups = pl.DataFrame({"_ev": pl.Series(dup_pos, dtype=pl.Int64), "_dts": pl.Series(dup_ts, dtype=pl.Int64)})
        out = []
        for fields, frame in frames:
            again = (
                frame.join(dups, on="_ev", how="inner")
                .sort("_ev")
                .with_columns(
                    _ts=pl.col("_dts"),
                    _dup=pl.lit(True),
                    _stream=pl.col("_stream") if source == "brevo" else pl.lit("updates"),
                )
                .drop("_dts")
            )
            out.append((fields, pl.concat([frame, again.select(frame.columns)])))
        return out

    def _write_source(self, source: str, frames) -> None:
        kinds = list(KIND_EXT)
        csv_kinds = (kinds.index("csv"), kinds.index("csv_gz"))
        kind_of_period = np.array([kinds.index(k) for k in self.kinds[source]])
        n_single_orders, n_single_updates = SINGLES[source]
        n_periods = len(self.period_starts)
        for fields, frame in frames:
            n = frame.height
            ts = frame["_ts"].to_numpy()
            period = self._period_of(ts)
            upd = (frame["_stream"] == "updates").to_numpy()
            kind = kind_of_period[period]
            if source != "esputnik":  # batches of partial updates / of BonifiQ records are plain arrays
                for envelope, array in (
                    ("json_envelope", "json_array"),
                    ("json_envelope_gz", "json_array_gz"),
                ):
                    kind = np.where(upd & (kind == kinds.index(envelope)), kinds.index(array), kind)
            # a few records as single-object files (an order posted alone, a delivery webhook)
            regular = np.isin(kind, (kinds.index("ndjson"), kinds.index("csv")))
            clean = regular & ~frame["_dup"].to_numpy() & (frame["_bad"].to_numpy() < 0)
            single = np.zeros(n, dtype=bool)
            cand = np.nonzero(clean & ~upd)[0]
            if n_single_orders and len(cand):
                single[self.rng.choice(cand, min(n_single_orders, len(cand)), replace=False)] = True
            if n_single_updates:
                order_period = frame["_order"].to_numpy() * n_periods + period
                _, inverse, counts = np.unique(order_period, return_inverse=True, return_counts=True)
                label = frame["_label"].to_numpy()
                cand = np.nonzero(clean & upd & (label == "delivered") & (counts[inverse] == 1))[0]
                if len(cand):
                    single[self.rng.choice(cand, min(n_single_updates, len(cand)), replace=False)] = True
            kind = np.where(single, kinds.index("json_object"), kind)
            # one file per (period, stream), plus the single-object files; records in time order inside a file
            key = np.where(single, 2 * n_periods + np.arange(n), 2 * period + upd)
            perm = np.lexsort((np.arange(n), ts, key))
            # JSON text of the rows that are not written as CSV, rendered before sorting (one column to move)
            is_csv_row = np.isin(kind, csv_kinds)
            json_part = frame.filter(pl.Series(~is_csv_row))
            json_text = self._spoil_json(
                source,
                json_part,
                json_part.select(pl.coalesce(pl.col("_json"), _json_expr(fields))).to_series(),
            )
            key, kind, period, upd = key[perm], kind[perm], period[perm], upd[perm]
            is_csv = np.isin(kind, csv_kinds)
            json_rank = np.cumsum(~is_csv_row) - 1
            json_text = json_text.gather(json_rank[perm[~is_csv]])
            csv_part = self._spoil_csv(source, frame[perm[is_csv]])
            meta = frame.select("_bad", "_dup", "_stream", "_oid", "_label")[perm]
            del frame, json_part
            starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if n else np.zeros(0, np.int64)
            ends = np.r_[starts[1:], n].astype(np.int64)
            pos = np.arange(n) - np.repeat(starts, ends - starts)
            meta = meta.with_columns(_pos=pl.Series(pos, dtype=pl.Int64))
            paths = []
            for s in starts:
                ptext = self.period_text[period[s]]
                stream = "updates" if upd[s] else "orders"
                if kind[s] == kinds.index("json_object"):
                    label = meta["_label"][int(s)]
                    name = f"{ptext}-{stream}-{meta['_oid'][int(s)]}" + (f"-{label}" if label else "")
                else:
                    name = f"{ptext}-{stream}"
                if self.part:
                    name += f"-part{self.part}"
                paths.append(f"{source}/{ptext[:4]}/{name}.{KIND_EXT[kinds[kind[s]]]}")
            self._account(source, meta, paths, starts)
            self._write_files(fields, paths, kind, starts, ends, is_csv, csv_part, json_text)

    def _spoil_csv(self, source: str, part: pl.DataFrame) -> pl.DataFrame:
        """A malformed record in a CSV file: its item-list cell is cut short."""
        col = ITEM_COLUMN[source]
        if part.height == 0 or col not in part.columns:
            return part
        cut = (pl.col("_bad") >= 0) & pl.col("_badcsv")
        return part.with_columns(
            pl.when(cut)
            .then(pl.col(col).str.slice(0, pl.col(col).str.len_chars() // 2))
            .otherwise(pl.col(col))
            .alias(col)
        )

    def _spoil_json(self, source: str, part: pl.DataFrame, text: pl.Series) -> pl.Series:
        """Turn the JSON of the bases of bad records into the intended bad records."""
        todo = part.select(pl.int_range(pl.len()).alias("_row"), "_bad", "_badv", "_badcsv").filter(
            (pl.col("_bad") >= 0) & (pl.col("_badv") >= 0) & ~pl.col("_badcsv")
        )
        if todo.height == 0:
            return text
        rows = todo["_row"].to_numpy()
        new = [
            _mutate(source, REASON_CODES[b], v, text[int(r)])
            for r, b, v in zip(rows, todo["_bad"].to_list(), todo["_badv"].to_list(), strict=True)
        ]
        text = text.clone()
        text.scatter(rows, pl.Series(new, dtype=pl.String))
        return text

    def _account(self, source: str, frame: pl.DataFrame, paths: list[str], starts: np.ndarray) -> None:
        s = self.summary
        s.records_per_source[source] += frame.height
        dup = frame["_dup"]
        s.duplicates_per_source[source] += int(dup.sum())
        s.updates_per_source[source] += int((~dup & (frame["_bad"] < 0) & (frame["_stream"] == "updates")).sum())
        bad = frame.select(pl.int_range(pl.len()).alias("_row"), "_pos", "_bad").filter(pl.col("_bad") >= 0)
        file_of = np.searchsorted(starts, bad["_row"].to_numpy(), side="right") - 1
        for f, pos, b in zip(file_of, bad["_pos"].to_list(), bad["_bad"].to_list(), strict=True):
            s.bad_record_locations.append(BadRecord(source, paths[f], int(pos), REASON_CODES[b]))

    def _write_files(self, fields, paths, kind, starts, ends, is_csv, csv_part, json_text) -> None:
        kinds = list(KIND_EXT)
        columns = [p for p, _ in fields]
        csv_part = csv_part.select(columns)
        csv_before = np.r_[0, np.cumsum(is_csv)]  # rows of the CSV part before row i
        json_before = np.r_[0, np.cumsum(~is_csv)]
        # all JSON records of the source as lines of one buffer; each line-based file is a slice of it
        big = io.BytesIO()
        pl.DataFrame({"j": json_text}).write_csv(big, include_header=False, quote_style="never")
        data = big.getbuffer()
        offsets = np.r_[0, np.cumsum(json_text.str.len_bytes().fill_null(0).to_numpy() + 1)]
        for f, (start, end) in enumerate(zip(starts, ends, strict=True)):
            k = kinds[kind[start]]
            target = self.out_dir / paths[f]
            target.parent.mkdir(parents=True, exist_ok=True)
            if k in ("csv", "csv_gz"):
                part = csv_part.slice(int(csv_before[start]), int(end - start))
                self._submit(_write_csv, target, part, k == "csv_gz")
            elif k == "json_object":
                record = json.loads(json_text[int(json_before[start])])
                self._submit(
                    _write_bytes,
                    target,
                    (json.dumps(record, ensure_ascii=False, indent=2) + "\n").encode(),
                    False,
                )
            elif k in ("ndjson", "jsonl", "ndjson_gz"):
                self._submit(
                    _write_bytes,
                    target,
                    data[offsets[json_before[start]] : offsets[json_before[end]]],
                    k.endswith("_gz"),
                )
            else:  # a JSON array or a {"orders": [...]} batch
                rows = json_text.slice(int(json_before[start]), int(end - start)).to_list()
                text = "[\n" + ",\n".join(rows) + "\n]"
                if k.startswith("json_envelope"):
                    text = '{"orders":' + text + "}"
                self._submit(_write_bytes, target, (text + "\n").encode("utf-8"), k.endswith("_gz"))
            self.summary.files.append(paths[f])
            self.summary.file_kinds[paths[f]] = k

    def _submit(self, fn, *args) -> None:
        """File writes run on a background thread while the next source is rendered."""
        self.pending.append(self.pool.submit(fn, *args))


def _write_bytes(target: Path, data, gz: bool) -> None:
    with open(target, "wb") as fh:
        fh.write(gzip.compress(data, compresslevel=6, mtime=0) if gz else data)


def _write_csv(target: Path, part: pl.DataFrame, gz: bool) -> None:
    if gz:
        buf = io.BytesIO()
        part.write_csv(buf)
        _write_bytes(target, buf.getvalue(), True)
    else:
        part.write_csv(target)
