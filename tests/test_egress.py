"""The guarded outbound path: every bypass of issue 8 (defect 1) is refused before anything is sent.

Names resolve through a fake resolver, and refused URLs go to a transport that fails the test if it is
ever asked to send: no packet leaves for a non-loopback address. Redirects and `next` links are
exercised against the emulator's source side on 127.0.0.1 (loopback allowed, as for local runs).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from requests_hardened.ip_filter import InvalidIPAddress

from emulator import EmulatorOptions, EmulatorServer, Timings
from shared.catalog.auth import StaticToken
from shared.catalog.client import GeoCatalogClient
from shared.errors import InvalidInputError, RejectedByServiceError
from shared.inputs.egress import EgressPolicy, GuardedSession, hardened_session
from shared.inputs.search import BoundedSearch, SearchBounds, SourceFetcher
from tests.conftest import ROOT

ALLOWED = "planetarycomputer.microsoft.com"
PUBLIC = "20.42.1.1"  # a public address (never contacted: the tests below only check)
SAMPLES = ROOT / "examples" / "landcover-items.json"


class NeverSend(requests.Session):
    """A transport that fails the test if anything would be sent."""

    def request(self, *args: object, **kwargs: object) -> requests.Response:  # type: ignore[override]
        raise AssertionError(f"must not send anything: {args}")


class FakeDns:
    """Resolves from a table and remembers which names were asked for."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return self.table.get(host, [])


def guarded(*hosts: str, dns: dict[str, list[str]] | None = None, loopback: bool = False) -> tuple[GuardedSession, FakeDns]:
    resolver = FakeDns(dns if dns is not None else {ALLOWED: [PUBLIC]})
    policy = EgressPolicy(frozenset(hosts or (ALLOWED,)), allow_loopback=loopback)
    return GuardedSession(policy, resolver=resolver, transport=NeverSend()), resolver


@pytest.mark.parametrize(("url", "why"), [
    ("https://169.254.169.254\\@planetarycomputer.microsoft.com/api/stac/v1/search", "backslash"),
    ("https://planetarycomputer.microsoft.com\\@169.254.169.254/", "backslash"),
    ("https://user:secret@planetarycomputer.microsoft.com/api/stac/v1/search", "userinfo"),
    ("https://169.254.169.254@planetarycomputer.microsoft.com/x", "userinfo"),
    ("http://planetarycomputer.microsoft.com/api/stac/v1/search", "not https"),
    ("ftp://planetarycomputer.microsoft.com/x", "not https"),
    ("https://evil.example/search", "SOURCE_URL_ALLOWLIST"),
    ("https://planetarycomputer.microsoft.com.evil.example/x", "SOURCE_URL_ALLOWLIST"),
    ("https://169.254.169.254/metadata/instance", "SOURCE_URL_ALLOWLIST"),
    ("https://planetarycomputer.microsoft.com /x", "space"),
])
def test_malformed_or_unlisted_urls_are_refused_before_any_lookup(url: str, why: str) -> None:
    session, dns = guarded()
    with pytest.raises(InvalidInputError, match=why) as caught:
        session.request("GET", url)
    assert dns.asked == []
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(("address", "kind"), [
    ("169.254.169.254", "link-local"),
    ("168.63.129.16", "platform"),
    ("10.0.0.5", "private"),
    ("172.16.3.4", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "shared address"),
    ("127.0.0.1", "loopback"),
    ("::1", "loopback"),
    ("fd00:ec2::254", "private"),
    ("fe80::1", "link-local"),
    ("fec0::1", "site-local"),
    ("feff:ffff::1", "site-local"),
    ("::ffff:169.254.169.254", "link-local"),
    ("0.0.0.0", "resolves to a"),
    ("224.0.0.1", "not a public"),
])
def test_names_resolving_to_forbidden_addresses_are_refused(address: str, kind: str) -> None:
    session, dns = guarded(dns={ALLOWED: [address]})
    with pytest.raises(InvalidInputError, match=kind):
        session.request("GET", f"https://{ALLOWED}/api/stac/v1/search")
    assert dns.asked == [ALLOWED]


def test_one_forbidden_address_among_public_ones_is_enough_to_refuse() -> None:
    session, _ = guarded(dns={ALLOWED: [PUBLIC, "10.1.2.3"]})
    with pytest.raises(InvalidInputError, match="private"):
        session.check(f"https://{ALLOWED}/x")


def test_an_allowlisted_ip_literal_is_still_checked_as_an_address() -> None:
    session, dns = guarded("169.254.169.254", "10.0.0.1")
    for host in ("169.254.169.254", "10.0.0.1"):
        with pytest.raises(InvalidInputError, match="resolves to a"):
            session.check(f"https://{host}/latest/meta-data")
    assert dns.asked == []  # literals are not looked up


def test_public_https_passes_the_checks() -> None:
    session, _ = guarded()
    checked = session.check(f"https://{ALLOWED.upper()}/api/stac/v1/search?collections=x")
    assert (checked.host, checked.addresses) == (ALLOWED, (PUBLIC,))


def test_loopback_and_plain_http_need_the_local_run_setting() -> None:
    strict, _ = guarded("127.0.0.1", "localhost", dns={"localhost": ["127.0.0.1"]})
    local, _ = guarded("127.0.0.1", "localhost", dns={"localhost": ["127.0.0.1"]}, loopback=True)
    for url in ("http://127.0.0.1:8080/source/search", "https://127.0.0.1/source/search", "https://localhost/x"):
        with pytest.raises(InvalidInputError):
            strict.check(url)
    assert local.check("http://127.0.0.1:8080/source/search").host == "127.0.0.1"
    assert local.check("http://localhost:8080/x").host == "localhost"
    with pytest.raises(InvalidInputError, match="not https"):  # loopback allows http only to loopback names
        guarded(ALLOWED, loopback=True)[0].check(f"http://{ALLOWED}/x")


# ----- against the emulator's source side (loopback allowed, as for local runs) ----------------------


@pytest.fixture(scope="module")
def source() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorOptions(timings=Timings(0.05, 0.05), source_items=str(SAMPLES))) as server:
        yield server


def local_session(*hosts: str, max_redirects: int = 3) -> tuple[GuardedSession, FakeDns]:
    resolver = FakeDns({"localhost": ["127.0.0.1"], "evil.example": ["10.0.0.9"], ALLOWED: ["169.254.169.254"]})
    policy = EgressPolicy(frozenset(hosts or ("127.0.0.1",)), allow_loopback=True, max_redirects=max_redirects)
    return GuardedSession(policy, resolver=resolver), resolver


def redirect(server: EmulatorServer, to: str, status: int = 302) -> str:
    return f"{server.url}/source/redirect?" + requests.compat.urlencode({"to": to, "status": status})


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_off_the_allowlist_is_refused_and_never_followed(source: EmulatorServer, status: int) -> None:
    session, dns = local_session()
    with pytest.raises(InvalidInputError, match="SOURCE_URL_ALLOWLIST"):
        session.request("GET", redirect(source, "https://evil.example/items.json", status))
    assert "evil.example" not in dns.asked


def test_a_redirect_to_the_metadata_address_is_refused(source: EmulatorServer) -> None:
    session, dns = local_session("127.0.0.1", ALLOWED)
    for target in ("http://169.254.169.254/latest/meta-data/", f"https://{ALLOWED}/api", "https://169.254.169.254\\@127.0.0.1/"):
        with pytest.raises(InvalidInputError):
            session.request("GET", redirect(source, target))
    assert dns.asked == [ALLOWED]  # looked up, found forbidden, never connected


def test_allowed_redirects_are_followed_and_the_answering_hop_is_reported(source: EmulatorServer) -> None:
    session, _ = local_session("127.0.0.1", "localhost")
    final = source.url.replace("127.0.0.1", "localhost") + "/source/items/items.json"
    with session.request("GET", redirect(source, redirect(source, final))) as response:
        assert response.status_code == 200 and response.url == final
        assert len(response.json()["features"]) == 4


def test_redirects_are_bounded(source: EmulatorServer) -> None:
    session, _ = local_session(max_redirects=2)
    url = f"{source.url}/source/items/items.json"
    for _ in range(3):
        url = redirect(source, url)
    with pytest.raises(InvalidInputError, match="more than 2 redirects"):
        session.request("GET", url)


def test_a_backslash_next_link_is_refused(source: EmulatorServer) -> None:
    session, dns = local_session("127.0.0.1", ALLOWED)
    fetcher = SourceFetcher(session)
    evil = "https://169.254.169.254\\@planetarycomputer.microsoft.com/api/stac/v1/search"
    with pytest.raises(InvalidInputError, match="backslash"):
        list(fetcher.search_pages(f"{source.url}/source/linked?" + requests.compat.urlencode({"next": evil}), {}, method="GET"))
    assert dns.asked == []


def test_a_next_link_off_the_allowlist_is_refused(source: EmulatorServer) -> None:
    fetcher = SourceFetcher(local_session()[0])
    with pytest.raises(InvalidInputError, match="SOURCE_URL_ALLOWLIST"):
        list(fetcher.search_pages(f"{source.url}/source/linked?next=https://evil.example/search", {}, method="GET"))
    good = BoundedSearch(lambda deadline: fetcher.search_pages(f"{source.url}/source/search", {"limit": 1}, method="GET",
                                                               deadline=deadline), SearchBounds(max_items=3))
    assert len(list(good)) == 3 and good.source == f"{source.url}/source/search" and good.stopped == ""


def test_loopback_is_refused_at_connect_time_too_without_the_setting(source: EmulatorServer) -> None:
    """Even a URL that skipped `check` would be refused by the pinned adapter (requests-hardened)."""
    before = dict(source.app.stats.by_route)
    with pytest.raises(InvalidIPAddress):
        hardened_session(EgressPolicy(frozenset({"127.0.0.1"}))).get(f"{source.url}/source/items/items.json")
    assert source.app.stats.by_route == before


def test_the_geocatalog_client_treats_a_redirect_as_an_error(source: EmulatorServer) -> None:
    """A 3xx from the catalog's own origin is not followed: the token could travel with it."""
    client = GeoCatalogClient(source.url, StaticToken("secret-token"), timeout=5)
    before = source.app.stats.source_authorization
    served = source.app.stats.by_route.get("GET /source/items/{name}", 0)
    for method in ("GET", "POST"):
        url = redirect(source, f"{source.url}/source/items/items.json")
        with pytest.raises(RejectedByServiceError, match="redirect") as caught:
            client.search_pages({}, url=url, method=method)
        assert caught.value.status == 302
    assert source.app.stats.source_authorization == before + 2  # the redirecting route itself, and nothing after it
    assert source.app.stats.by_route.get("GET /source/items/{name}", 0) == served  # the target was never asked
