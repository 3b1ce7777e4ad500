"""Types of the compiled ordered output (ordered.pyx), for the type checker."""

class Output:
    bytes_written: int
    members_written: int
