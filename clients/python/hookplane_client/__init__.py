"""hookplane client helpers for grpcio: request signing.

The generated stubs live in `hookplane_client.v1` once `generate.py` has run
(see README.md); this module does not need them.
"""

from hookplane_client.signing import (
    ALGORITHM,
    SigningInterceptor,
    new_nonce,
    sign,
    signed_channel,
    string_to_sign,
)

__all__ = [
    "ALGORITHM",
    "SigningInterceptor",
    "new_nonce",
    "sign",
    "signed_channel",
    "string_to_sign",
]
