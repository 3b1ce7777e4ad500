"""The web's service in one process: the request path, the operators' view and the
registry front, on this process's parts (tasks.parts); `service()` builds it once."""

import functools

from service.front.artifacts import FrontArtifacts
from service.overview import Overview
from service.requests import Requests
from tasks.parts import Parts, process_parts


class Service:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.settings = parts.settings
        self.requests = Requests(parts)
        self.overview = Overview(parts)
        self.front = FrontArtifacts(self.requests)

    def close(self) -> None:
        """Write the counts still gathered; close the registry sessions."""
        self.requests.close()
        self.parts.close()


@functools.cache
def service() -> Service:
    """This process's service, on this process's parts."""
    return Service(process_parts())
