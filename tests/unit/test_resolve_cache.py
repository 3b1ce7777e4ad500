"""The resolve cache (service.access): granted answers only, per caller, for its time.

The registry here is a stub that counts what it is asked; the real registry judges the
same behaviour in tests/service/test_service_access.py."""

import time

import pytest

from service.access import Access, Caller
from squash.distribution.credentials import Credentials
from squash.errors import RegistryError
from squash.reference import parse_docker_ref
from tasks.errors import Denied
from tasks.resolver import Resolver

REF = parse_docker_ref("127.0.0.1:5000/team/app:v1")
ALICE = Caller(credentials=Credentials("alice", "secret"))
BOB = Caller(credentials=Credentials("bob", "hunter2"))


class StubRegistry:
    def __init__(self) -> None:
        self.who = ""
        self.asked: list[str] = []
        self.refuse: set[str] = set()
        self.digest = "sha256:" + "a" * 64

    def resolve(self, repository: str, reference: str, what: str) -> tuple[str, str]:
        self.asked.append(reference)
        if self.who in self.refuse:
            raise RegistryError(f"{what}: access denied (403)", 403)
        return self.digest, "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch) -> tuple[Access, StubRegistry]:
    access, stub = Access(Resolver(), resolve_seconds=0.3), StubRegistry()

    def session(ref: object, caller: Caller) -> StubRegistry:
        stub.who = caller.credentials.username if caller.credentials else "anonymous"
        return stub

    monkeypatch.setattr(access.resolver, "_session", session)
    return access, stub


def test_a_grant_is_reused_for_its_caller_only_until_it_runs_out(stubbed) -> None:
    access, stub = stubbed
    assert access.resolve(REF, ALICE)[0] == stub.digest
    assert access.resolve(REF, ALICE)[0] == stub.digest
    assert len(stub.asked) == 1
    stub.refuse.add("bob")
    with pytest.raises(Denied):
        access.resolve(REF, BOB)  # another caller: asked, and refused
    assert len(stub.asked) == 2
    stub.digest = "sha256:" + "b" * 64  # the tag moves
    assert access.resolve(REF, ALICE)[0] == "sha256:" + "a" * 64  # within the time
    time.sleep(0.35)
    assert access.resolve(REF, ALICE)[0] == stub.digest
    assert len(stub.asked) == 3


def test_a_refusal_is_never_remembered(stubbed) -> None:
    access, stub = stubbed
    stub.refuse.add("bob")
    with pytest.raises(Denied):
        access.resolve(REF, BOB)
    stub.refuse.clear()  # bob is granted access
    assert access.resolve(REF, BOB)[0] == stub.digest
    assert len(stub.asked) == 2


def test_zero_seconds_remembers_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    access, stub = Access(Resolver(), resolve_seconds=0), StubRegistry()
    stub.who = "alice"
    monkeypatch.setattr(access.resolver, "_session", lambda ref, caller: stub)
    for _ in range(3):
        access.resolve(REF, ALICE)
    assert len(stub.asked) == 3
