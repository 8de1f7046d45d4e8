"""URL tokens keep itsdangerous' format, whatever the signer does to make them cheaply.

Instances of different versions share one load balancer during a rolling update: each must read
the other's tokens, so the gateway's tokens are checked against plain itsdangerous both ways.
"""

from __future__ import annotations

import uuid

import pytest
from itsdangerous import BadSignature, URLSafeTimedSerializer

from gateway.errors import TokenInvalid
from gateway.server.domain.signing import Purpose, UrlSigner, creator_tag

OLD_KEY, NEW_KEY = "old-signing-key-0123456789", "new-signing-key-9876543210"


def plain(keys: list[str], purpose: Purpose) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(keys, salt=f"sources-gateway.{purpose.value}")


@pytest.mark.parametrize("purpose", list(Purpose))
def test_plain_itsdangerous_reads_the_gateways_tokens(purpose: Purpose) -> None:
    sid = str(uuid.uuid4())
    token = UrlSigner([OLD_KEY, NEW_KEY], 600).sign(purpose, sid)
    payload = plain([NEW_KEY], purpose).loads(token)
    assert payload["id"] == sid
    # Signed with the newest key only: the old one alone does not verify it.
    with pytest.raises(BadSignature):
        plain([OLD_KEY], purpose).loads(token)


@pytest.mark.parametrize("purpose", list(Purpose))
def test_the_gateway_reads_plain_itsdangerous_tokens(purpose: Purpose) -> None:
    sid = str(uuid.uuid4())
    signer = UrlSigner([OLD_KEY, NEW_KEY], 600)
    # Signed by an instance that still had only the old key.
    assert signer.verify(purpose, sid, plain([OLD_KEY], purpose).dumps({"id": sid}))
    # itsdangerous compresses a payload that shrinks; such tokens are read too.
    compressed = plain([NEW_KEY], purpose).dumps({"id": sid, "note": "a" * 200})
    assert compressed.startswith(".")
    assert signer.verify(purpose, sid, compressed).source_id == sid


def test_a_token_of_one_purpose_signed_by_plain_itsdangerous_is_not_the_other() -> None:
    sid = str(uuid.uuid4())
    signer = UrlSigner([NEW_KEY], 600)
    token = plain([NEW_KEY], Purpose.UPLOAD).dumps({"id": sid})
    assert signer.verify(Purpose.UPLOAD, sid, token)
    with pytest.raises(TokenInvalid):
        signer.verify(Purpose.DOWNLOAD, sid, token)


def test_both_tokens_of_a_new_source_are_plain_itsdangerous_tokens() -> None:
    """``sign_all`` shares one payload between the two purposes; each token is still exactly
    what itsdangerous makes for its own salt, and neither works for the other purpose."""
    sid = str(uuid.uuid4())
    signer = UrlSigner([OLD_KEY, NEW_KEY], 600)
    exp = signer.expiry()
    tokens = dict(zip(Purpose, signer.sign_all(sid, exp), strict=True))
    assert tokens[Purpose.UPLOAD] != tokens[Purpose.DOWNLOAD]
    for purpose, token in tokens.items():
        payload, issued = plain([NEW_KEY], purpose).loads(token, return_timestamp=True)
        assert payload == {"id": sid, "exp": exp}
        # Byte for byte what itsdangerous signs, given the same payload and timestamp.
        theirs = plain([NEW_KEY], purpose)
        theirs.signer_kwargs = {}
        value = token.rsplit(".", 1)[0]
        assert theirs.make_signer().get_signature(value) == token.rsplit(".", 1)[1].encode()
        assert signer.verify(purpose, sid, token).expires_at == exp
        other = next(p for p in Purpose if p is not purpose)
        with pytest.raises(TokenInvalid):
            signer.verify(other, sid, token)
        assert abs(issued.timestamp() - exp + 600) < 5


def test_the_creator_travels_signed_and_older_tokens_still_verify() -> None:
    """``auth.limits.concurrent_uploads`` counts uploads against the source's creator, which the
    token carries (as a digest); tokens from before carry none and verify as they did."""
    sid = str(uuid.uuid4())
    signer = UrlSigner([NEW_KEY], 600)
    tag = creator_tag("ci")
    assert tag != "ci" and tag == creator_tag("ci") and tag != creator_tag("cj")
    upload, download = signer.sign_all(sid, signer.expiry(), tag)
    for purpose, token in ((Purpose.UPLOAD, upload), (Purpose.DOWNLOAD, download)):
        assert plain([NEW_KEY], purpose).loads(token)["by"] == tag
        assert signer.verify(purpose, sid, token).created_by == tag
    older = plain([NEW_KEY], Purpose.UPLOAD).dumps({"id": sid})
    assert signer.verify(Purpose.UPLOAD, sid, older).created_by is None
    # The creator is signed: another creator in the payload breaks the signature.
    other = plain(["another-signing-key-01"], Purpose.UPLOAD).dumps({"id": sid, "by": "x"})
    forged = other.partition(".")[0] + "." + upload.partition(".")[2]
    with pytest.raises(TokenInvalid):
        signer.verify(Purpose.UPLOAD, sid, forged)
