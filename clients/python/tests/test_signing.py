"""The signing interceptor on its own: the signature the server expects, on
every kind of call, with the caller's metadata kept and the secret hidden."""

import hashlib
import hmac
import pickle

import pytest

from hookplane_client import SigningInterceptor, sign, string_to_sign

METHOD = "/hookplane.v1.SubscriptionService/CreateSubscription"
NONCE = "abcdefghijklmnop"
SECRET = "s3cr3t-signing-key"


class Details:
    """What grpcio passes an interceptor (grpc.ClientCallDetails' fields)."""

    def __init__(self, method, metadata=None):
        self.method = method
        self.timeout = 5.0
        self.metadata = metadata
        self.credentials = None
        self.wait_for_ready = True
        self.compression = None


def fixed(api_id="ak_1", nonce=NONCE):
    return SigningInterceptor(api_id, SECRET, clock=lambda: 1700000000.9, nonce_factory=lambda: nonce)


def test_string_to_sign_is_five_lines_without_trailing_newline():
    assert string_to_sign("ak_1", "1700000000", NONCE, METHOD) == (
        "HOOKPLANE-HMAC-SHA256\nak_1\n1700000000\nabcdefghijklmnop\n"
        "/hookplane.v1.SubscriptionService/CreateSubscription"
    )


def test_sign_matches_the_servers_vector():
    # The vector in src/auth/signature.rs, computed there with openssl.
    expected = "97677f7318b6b215ad04ed19a592d78a8a358e89658b50c60a6e1a6d822c02fd"
    assert sign(SECRET, "ak_1", "1700000000", NONCE, METHOD) == expected
    assert sign(SECRET.encode(), "ak_1", "1700000000", NONCE, METHOD) == expected


@pytest.mark.parametrize(
    "kind", ["unary_unary", "unary_stream", "stream_unary", "stream_stream"]
)
def test_every_kind_of_call_is_signed_and_keeps_the_callers_metadata(kind):
    seen = []

    def continuation(details, request):
        seen.append((details, request))
        return "answer"

    caller = [("x-request-id", "req-1"), ("x-api-nonce", "stale-nonce-from-the-caller")]
    intercept = getattr(fixed(), f"intercept_{kind}")
    assert intercept(continuation, Details(METHOD, caller), "request") == "answer"

    (details, request), = seen
    assert request == "request"
    assert (details.method, details.timeout, details.wait_for_ready) == (METHOD, 5.0, True)
    assert details.metadata == [
        ("x-request-id", "req-1"),
        ("x-api-id", "ak_1"),
        ("x-api-timestamp", "1700000000"),
        ("x-api-nonce", NONCE),
        ("x-api-signature", "97677f7318b6b215ad04ed19a592d78a8a358e89658b50c60a6e1a6d822c02fd"),
    ]


def test_a_method_given_as_bytes_signs_the_same():
    assert fixed().signed_metadata(METHOD.encode()) == fixed().signed_metadata(METHOD)


def test_each_call_gets_a_fresh_well_formed_nonce():
    interceptor = SigningInterceptor("ak_1", SECRET)
    nonces = {dict(interceptor.signed_metadata(METHOD))["x-api-nonce"] for _ in range(200)}
    assert len(nonces) == 200
    for nonce in nonces:
        assert 16 <= len(nonce) <= 128
        assert set(nonce) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def test_the_signature_covers_the_method():
    a = dict(fixed().signed_metadata(METHOD))["x-api-signature"]
    b = dict(fixed().signed_metadata("/hookplane.v1.SubscriptionService/GetSubscription"))["x-api-signature"]
    assert a != b
    key = SECRET.encode()
    message = string_to_sign("ak_1", "1700000000", NONCE, METHOD).encode()
    assert a == hmac.new(key, message, hashlib.sha256).hexdigest()


def test_the_secret_shows_nowhere():
    interceptor = SigningInterceptor("ak_1", SECRET)
    assert repr(interceptor) == "SigningInterceptor(api_id='ak_1', secret=<redacted>)"
    assert SECRET not in str(interceptor)
    assert SECRET not in repr(vars(interceptor))
    with pytest.raises(TypeError):
        pickle.dumps(interceptor)


@pytest.mark.parametrize("api_id", ["", "has space", "line\nbreak", "x" * 129])
def test_a_malformed_api_id_is_refused_at_once(api_id):
    with pytest.raises(ValueError):
        SigningInterceptor(api_id, SECRET)


def test_an_empty_secret_is_refused():
    with pytest.raises(ValueError):
        SigningInterceptor("ak_1", "")


@pytest.mark.parametrize("nonce", ["short", "has.dot.in.it.0123456789", "n" * 129])
def test_a_nonce_factory_giving_a_malformed_nonce_is_refused(nonce):
    with pytest.raises(ValueError):
        fixed(nonce=nonce).signed_metadata(METHOD)
