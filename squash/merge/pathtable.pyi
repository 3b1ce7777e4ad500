"""Types of the compiled path table (pathtable.pyx), for the type checker."""

class PathTable:
    def __init__(self) -> None: ...
