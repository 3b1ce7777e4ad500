"""Who is calling: the Authorization header as the registry will be asked about it."""

import base64
import binascii

from fastapi import Request

from service.access import Caller
from squash.distribution.credentials import Credentials
from tasks.errors import BadRequest

#: Sent with every 401, so curl, browsers and docker know to send credentials.
CHALLENGE = {"WWW-Authenticate": 'Basic realm="squashd"'}


def caller_of(request: Request) -> Caller:
    """Basic credentials are used with the registry's own auth flow; a Bearer token is
    passed to the registry as it is (a registry token); none is an anonymous caller."""
    header = request.headers.get("authorization", "").strip()
    if not header:
        return Caller(address=request.client.host if request.client else "")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "basic" and value:
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, sep, password = "", "", ""
        if not sep or not user:
            raise BadRequest("malformed Basic credentials (base64 of USER:PASSWORD expected)")
        return Caller(credentials=Credentials(user, password))
    if scheme.lower() == "bearer" and value:
        return Caller(bearer=value)
    raise BadRequest(f"unsupported Authorization scheme {scheme!r} (Basic or Bearer)")
