"""`OCI-Namespace`: the registry a mirror request named with `ns`, echoed in the answer,
as the distribution spec suggests, so a client sees which upstream answered it."""

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATE = "oci_namespace"  # where a route leaves the `ns` it served, for the answer


def echo_namespace(request: Request, ns: str | None) -> None:
    """The request's `ns` is served here: its answer says so."""
    if ns is not None:
        setattr(request.state, STATE, ns)


class EchoNamespace:
    """ASGI middleware: the `ns` a route served goes out as `OCI-Namespace`."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            ns = scope.get("state", {}).get(STATE)
            if message["type"] == "http.response.start" and ns is not None:
                headers = [*message.get("headers", []), (b"oci-namespace", ns.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self._app(scope, receive, sending)
