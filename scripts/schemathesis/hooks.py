"""Schemathesis hooks for Kassa (scripts/schemathesis.sh): every `/v1` request is signed like a
merchant's (DESIGN.md §4) and carries a fresh `Idempotency-Key`.

`Kassa-Signature` is `v1=<hex HMAC-SHA256(secret, "{timestamp}.{METHOD}.{path_and_query}.{body}")>`
over the request target and the body bytes exactly as sent, so it is computed last, on the
prepared request (a `requests` auth object), not on the generated case. The auth provider below
only marks a case as authenticated (merchant, timestamp and a placeholder signature), through
schemathesis's own auth mechanism, so its checks that take the credentials away
(`ignored_auth`) see requests without them: an unmarked request is sent unsigned.

Needs KASSA_MERCHANT_ID and KASSA_MERCHANT_SECRET in the environment.
"""

import hashlib
import hmac
import os
import re
import time
import uuid

import requests
import schemathesis

MERCHANT_ID = os.environ["KASSA_MERCHANT_ID"]
SECRET = os.environ["KASSA_MERCHANT_SECRET"].encode()
# Stands in for the signature until the request is prepared.
UNSIGNED = "v1=to-be-signed"
# What Kassa accepts as an Idempotency-Key (docs/openapi.json).
VALID_KEY = re.compile(r"^[!-~]{1,255}$")
# Headers that frame the HTTP message rather than carry API data. Negative testing adds
# arbitrary headers, and one named like these (`Content-Length: uiu"IV8…`) makes the request an
# invalid HTTP message, which hyper refuses with a bare 400 before Kassa sees it (RFC 9112
# §6.3); the transport sets them from the request itself instead.
FRAMING_HEADERS = ("Content-Length", "Transfer-Encoding", "Host", "Connection", "Expect", "TE", "Trailer", "Upgrade")


def sign(secret: bytes, timestamp: str, method: str, path_and_query: str, body: bytes) -> str:
    message = b".".join([timestamp.encode(), method.encode(), path_and_query.encode(), body])
    return "v1=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


class KassaSignature(requests.auth.AuthBase):
    """Signs a prepared request that the auth provider marked, over exactly what is sent."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if isinstance(request.body, str):
            # Sent as UTF-8 bytes; sign and send the same bytes.
            request.body = request.body.encode("utf-8")
        for name in FRAMING_HEADERS:
            request.headers.pop(name, None)
        request.prepare_content_length(request.body)
        if request.headers.get("Kassa-Signature") != UNSIGNED:
            return request
        body = request.body or b""
        if not isinstance(body, bytes):
            raise TypeError(f"cannot sign a streamed body ({type(body).__name__})")
        request.headers["Kassa-Signature"] = sign(
            SECRET,
            request.headers["Kassa-Timestamp"],
            request.method,
            request.path_url,
            body,
        )
        return request


SIGNATURE = KassaSignature()


@schemathesis.auth(refresh_interval=None, retry_on=[]).apply_to(path_regex="^/v1/")
class KassaMerchant:
    """The merchant's credentials for every `/v1` operation (the document's security scheme)."""

    def get(self, case, context):
        return MERCHANT_ID

    def set(self, case, data, context):
        headers = case.headers if case.headers is not None else {}
        headers["Kassa-Merchant"] = data
        headers["Kassa-Timestamp"] = str(int(time.time()))
        headers["Kassa-Signature"] = UNSIGNED
        # A fresh key per request, so no two generated requests collide on one; a key that
        # is deliberately invalid (negative testing) is kept, Kassa must refuse it.
        if case.method.upper() == "POST":
            key = headers.get("Idempotency-Key")
            if key is None or (isinstance(key, str) and VALID_KEY.match(key)):
                headers["Idempotency-Key"] = uuid.uuid4().hex
        case.headers = headers


@schemathesis.hook
def before_call(context, case, kwargs):
    kwargs["auth"] = SIGNATURE


# Sandbox cards (docs/API.md): success, decline, insufficient funds, 3-D Secure, another brand.
SANDBOX_CARDS = [
    "4242424242424242",
    "4000000000000002",
    "4000000000009995",
    "4000000000003220",
    "5555555555554444",
]


def _positive(case, *phases) -> bool:
    meta = case.meta
    if meta is None or not isinstance(case.body, dict):
        return False
    mode = getattr(meta.generation.mode, "value", meta.generation.mode)
    phase = getattr(meta.phase.name, "value", meta.phase.name)
    return mode == "positive" and phase in phases


@schemathesis.hook
def flatmap_case(context, case):
    """Half of the schema-valid charges the fuzzer makes get a sandbox card with a future expiry
    in USD and a fresh order id, so that charges get past the checks no schema can express (the Luhn check, the
    expiry, the currency's decimals and the method's limits) and the payment commands reached
    through the document's links act on real payments in every state. Invalid data (negative
    testing) is never touched."""
    from hypothesis import strategies as st

    operation = context.operation
    if operation is None or (operation.method.upper(), operation.path) != ("POST", "/v1/payments"):
        return st.just(case)
    if not _positive(case, "fuzzing", "stateful"):
        return st.just(case)

    def realistic(choice):
        card_index, amount_minor = choice
        if card_index is None:
            return case
        body = case.body
        # The document's example order id comes back again and again: 409 after the first.
        body["merchant_order_id"] = f"st-{uuid.uuid4().hex}"
        body["method"] = "card"
        body["currency"] = "USD"
        body["amount"] = f"{amount_minor // 100}.{amount_minor % 100:02d}"
        body.pop("bank_account", None)
        body.pop("wallet_id", None)
        card = body.get("card") if isinstance(body.get("card"), dict) else {}
        body["card"] = {
            "number": SANDBOX_CARDS[card_index],
            "exp_month": card.get("exp_month", 12),
            "exp_year": time.gmtime().tm_year + 3,
            "cvc": card.get("cvc", "123"),
        }
        return case

    cards = st.one_of(st.none(), st.integers(0, len(SANDBOX_CARDS) - 1))
    return st.tuples(cards, st.integers(1, 100_000_00)).map(realistic)
