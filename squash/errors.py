"""Errors the engine raises: each says what went wrong and which image or layer."""


class SquashError(Exception):
    """A failure the user can act on; its message is one line meant for them."""


class BadReference(SquashError):
    """The image reference cannot be parsed or does not name an image."""


class DigestMismatch(SquashError):
    """A blob's bytes do not match the digest or size that names it."""


class InvalidLayer(SquashError):
    """A layer is not a tar we can merge (malformed header, bad whiteout, escaping path)."""


class UnsupportedMediaType(SquashError):
    """A manifest, index or layer of a kind we do not read."""


class RegistryError(SquashError):
    """The registry refused or failed; the message says which registry and why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the registry's HTTP answer, when it refused (401, 403, 404)


class TransientError(RegistryError):
    """Worth retrying: connection trouble, 429, 5xx."""
