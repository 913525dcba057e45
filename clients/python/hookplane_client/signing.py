"""HMAC request signing for hookplane calls made with grpcio.

Every hookplane call except health and reflection carries four headers
(see the API contract, "Authentication: HMAC request signing"):

    x-api-id         the credential's api id
    x-api-timestamp  Unix seconds, decimal
    x-api-nonce      16..128 chars of [A-Za-z0-9_-], never reused
    x-api-signature  lowercase hex HMAC-SHA256(secret, string to sign)

The string to sign is five lines joined by "\\n", with no trailing newline:

    HOOKPLANE-HMAC-SHA256
    <api id>
    <timestamp>
    <nonce>
    <full gRPC method path, e.g. /hookplane.v1.SubscriptionService/ResolveSubscribers>

`SigningInterceptor` signs every call on a channel afresh (the nonce is
single-use, so a signature can never be reused), and `signed_channel` builds
such a channel. The secret is kept only inside an HMAC object: it is never
logged, and neither `repr` nor `vars` of the interceptor shows it.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import re
import secrets
import time
from typing import Callable, Iterable, Optional, Sequence, Tuple, Union

import grpc

ALGORITHM = "HOOKPLANE-HMAC-SHA256"

API_ID_HEADER = "x-api-id"
TIMESTAMP_HEADER = "x-api-timestamp"
NONCE_HEADER = "x-api-nonce"
SIGNATURE_HEADER = "x-api-signature"
REQUEST_ID_HEADER = "x-request-id"

_SIGNED_HEADERS = frozenset((API_ID_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER))
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,128}")
# 1..128 visible ASCII characters, as the server requires of x-api-id.
_API_ID = re.compile(r"[\x21-\x7e]{1,128}")

Metadata = Sequence[Tuple[str, Union[str, bytes]]]


def string_to_sign(api_id: str, timestamp: str, nonce: str, method: str) -> str:
    """The message that is signed, exactly as the server rebuilds it."""
    return "\n".join((ALGORITHM, api_id, timestamp, nonce, method))


def sign(secret: Union[str, bytes], api_id: str, timestamp: str, nonce: str, method: str) -> str:
    """Lowercase hex HMAC-SHA256 of `string_to_sign` under `secret` (UTF-8)."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    message = string_to_sign(api_id, timestamp, nonce, method).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def new_nonce() -> str:
    """A fresh nonce: 32 URL-safe characters from 24 random bytes."""
    return secrets.token_urlsafe(24)


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    """The caller's call details with the signed metadata in place."""


class SigningInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds hookplane's signed headers to every call, of every kind.

    Metadata the caller passes is kept (an `x-request-id` included, which the
    server echoes and logs); any x-api-* headers the caller set are replaced,
    since the server reads one value of each.

    `clock` (Unix seconds) and `nonce_factory` are there for tests; a nonce
    factory that repeats itself gets its calls refused as replays.
    """

    def __init__(
        self,
        api_id: str,
        secret: Union[str, bytes],
        *,
        clock: Callable[[], float] = time.time,
        nonce_factory: Callable[[], str] = new_nonce,
    ) -> None:
        if not isinstance(api_id, str) or not _API_ID.fullmatch(api_id):
            raise ValueError("api_id must be 1 to 128 visible ASCII characters")
        key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        if not key:
            raise ValueError("secret must not be empty")
        self._api_id = api_id
        # Keyed once; each call signs on a copy. The raw secret is not kept.
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)
        self._clock = clock
        self._nonce_factory = nonce_factory

    @property
    def api_id(self) -> str:
        return self._api_id

    def __repr__(self) -> str:
        return f"SigningInterceptor(api_id={self._api_id!r}, secret=<redacted>)"

    def __reduce__(self):
        # Pickling would need the secret; refuse rather than leak it.
        raise TypeError("SigningInterceptor cannot be pickled: it holds a secret")

    def signed_metadata(self, method: Union[str, bytes]) -> list:
        """The four signed headers for one call of `method` (a full path)."""
        if isinstance(method, bytes):
            method = method.decode("ascii")
        timestamp = str(int(self._clock()))
        nonce = self._nonce_factory()
        if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
            raise ValueError("a nonce must be 16 to 128 characters of [A-Za-z0-9_-]")
        mac = self._keyed.copy()
        mac.update(string_to_sign(self._api_id, timestamp, nonce, method).encode("utf-8"))
        return [
            (API_ID_HEADER, self._api_id),
            (TIMESTAMP_HEADER, timestamp),
            (NONCE_HEADER, nonce),
            (SIGNATURE_HEADER, mac.hexdigest()),
        ]

    def _sign(self, details: grpc.ClientCallDetails) -> _CallDetails:
        kept = [(k, v) for k, v in (details.metadata or ()) if k.lower() not in _SIGNED_HEADERS]
        return _CallDetails(
            details.method,
            details.timeout,
            kept + self.signed_metadata(details.method),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._sign(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._sign(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._sign(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._sign(client_call_details), request_iterator)


def signed_channel(
    target: str,
    api_id: str,
    secret: Union[str, bytes],
    credentials: Optional[grpc.ChannelCredentials] = None,
    options: Optional[Iterable[Tuple[str, object]]] = None,
) -> grpc.Channel:
    """A channel to `target` whose every call is signed as `api_id`.

    Plaintext unless `credentials` (e.g. `grpc.ssl_channel_credentials()`) is
    given. Close it when done (`with signed_channel(...) as channel:`).
    """
    interceptor = SigningInterceptor(api_id, secret)
    if credentials is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        channel = grpc.secure_channel(target, credentials, options=options)
    return grpc.intercept_channel(channel, interceptor)
