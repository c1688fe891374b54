"""The one way out to a URL that a message (or a page it led to) named: items URLs, STAC API searches
and their `next` links, and the SAS API.

Every hop of every request is checked the same way, before anything is sent:
1. the URL is parsed once, by urllib3's `parse_url` (the parser requests itself uses), and refused
   when it has userinfo, a backslash, a control character, or a scheme other than https (http only
   for loopback, when `allow_loopback` is set for local runs);
2. its host must be on the allowlist;
3. the host is resolved (through an injectable resolver) and refused when any address is loopback
   (unless allowed), link-local (the cloud metadata service), private, CG-NAT, Azure's platform
   address, or otherwise not public.
The request then goes through requests-hardened, which resolves again, pins the connection to the
address it checked (closing the DNS-rebinding window) while keeping Host, SNI and certificate checks
on the name; our adapter re-checks that pinned address against the rules above. Redirects are never
followed by requests: `GuardedSession` follows them itself, a bounded number of times, checking each
hop as if it were the first.

Time is bounded in total, not per read: a request carries a `Deadline` (SOURCE_REQUEST_SECONDS for a
JSON answer, the caller's for a download), every socket read waits at most the time left, and the
body is read with `read1` (what has arrived, never "wait for a full MiB") with the deadline checked
between reads. A server trickling a byte every 0.2 s is cut at the deadline; the response headers are
the one part read by http.client under the per-read timeout alone (capped at the time left when the
request starts).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import orjson
import requests
from requests_hardened import Config, HTTPSession
from requests_hardened.ip_filter import InvalidIPAddress
from requests_hardened.ip_filter_adapter import IPFilterAdapter
from urllib3 import exceptions as urllib3_errors
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from shared.errors import RETRYABLE_STATUSES, InvalidInputError, RetryableError
from shared.limits import Deadline, LimitExceeded, describe_bytes, sooner
from shared.redact import url_without_query

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_JSON_BYTES = 64 * 1024 * 1024  # one search page or SAS answer, parsed in memory
READ_SIZE = 1 << 20  # most bytes taken from the socket per read of a body
# Ranges that `ipaddress` does not call private but that reach the platform or internal networks.
BLOCKED_NETWORKS = tuple(ipaddress.ip_network(net) for net in (
    "168.63.129.16/32",  # Azure's host platform address (wire server, DNS, health probes)
    "100.64.0.0/10",     # CG-NAT shared address space
    "192.0.0.0/24",      # IETF protocol assignments
    "192.88.99.0/24",    # 6to4 relay anycast
    "64:ff9b::/96", "64:ff9b:1::/48",  # NAT64: would reach IPv4 behind a translator
    "2002::/16",         # 6to4: embeds an IPv4 address
))


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (what the connection could use)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise RetryableError(f"cannot resolve {host!r}") from None
    return [str(info[4][0]) for info in found]


def forbidden_reason(address: IPAddress, *, allow_loopback: bool) -> str | None:
    """Why a connection to `address` is refused, or None when it is a public address (or allowed loopback)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return None if allow_loopback else "loopback"
    if address.is_link_local:
        return "link-local (cloud metadata)"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local (fec0::/10, deprecated but still routed inside some networks)"
    if any(address in net for net in BLOCKED_NETWORKS if net.version == address.version):
        return "platform or shared address space"
    if address.is_private:
        return "private"
    if address.is_multicast or address.is_reserved or address.is_unspecified or not address.is_global:
        return "not a public address"
    return None


@dataclass(frozen=True)
class EgressPolicy:
    """Where the app may connect on a message's behalf.

    Args:
        allowed_hosts: host names (lower case) that URLs may name.
        allow_loopback: local runs only: loopback addresses, and plain http to them, are allowed.
        max_redirects: hops followed after the first request.
        max_bytes: largest document read (streamed); a JSON answer parsed in memory is also capped at 64 MiB.
        timeout: longest wait for one socket read, seconds (connecting gets at most 10 s).
        request_seconds: total wall time of one JSON request (`get_json`), body included.
    """

    allowed_hosts: frozenset[str]
    allow_loopback: bool = False
    max_redirects: int = 3
    max_bytes: int = 256 * 1024 * 1024
    timeout: float = 30.0
    request_seconds: float = 60.0
    request_setting: str = "SOURCE_REQUEST_SECONDS"


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed every check: `url` is what is sent, `host` what was allowlisted."""

    url: str
    host: str
    addresses: tuple[str, ...] = field(default=())


class GuardedSession:
    """requests, but only to URLs the policy allows, with redirects re-checked hop by hop.

    Args:
        policy: what is allowed.
        resolver: host name -> addresses; tests pass one that never touches DNS.
        transport: the session that sends; by default requests-hardened's, pinned to checked addresses.
    """

    def __init__(self, policy: EgressPolicy, *, resolver: Resolver = system_resolver,
                 transport: requests.Session | None = None) -> None:
        self.policy = policy
        self._resolve = resolver
        self._session = transport or hardened_session(policy)

    def check(self, url: str) -> CheckedUrl:
        """The URL as it will be sent, after every check.

        Raises:
            InvalidInputError: the URL or an address of its host is not allowed.
            RetryableError: the host cannot be resolved right now.
        """
        if not isinstance(url, str) or "\\" in url or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
            raise InvalidInputError("refusing a URL with a backslash, a space or a control character")
        shown = _shown(url)
        try:
            parsed = parse_url(url)
        except LocationParseError:
            raise InvalidInputError(f"URL {shown} cannot be parsed") from None
        host = (parsed.host or "").lower().strip("[]")
        if parsed.auth is not None:
            raise InvalidInputError(f"URL {shown} has userinfo (user@ or user:password@)")
        loopback_name = host in LOOPBACK_NAMES
        if not (parsed.scheme == "https" or (parsed.scheme == "http" and loopback_name and self.policy.allow_loopback)):
            raise InvalidInputError(f"URL {shown} is not https")
        if host not in self.policy.allowed_hosts:
            raise InvalidInputError(f"source {shown} is not on SOURCE_URL_ALLOWLIST")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        addresses = tuple(self._addresses(host, port))
        for address in addresses:
            reason = forbidden_reason(ipaddress.ip_address(address), allow_loopback=self.policy.allow_loopback)
            if reason:
                raise InvalidInputError(f"source {shown}: {host} resolves to a {reason} address")
        return CheckedUrl(parsed.url, host, addresses)

    def _addresses(self, host: str, port: int) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        addresses = self._resolve(host, port)
        if not addresses:
            raise RetryableError(f"cannot resolve {host!r}")
        return addresses

    def request(self, method: str, url: str, *, params: dict[str, str] | None = None,
                json: Any = None, stream: bool = False, deadline: Deadline | None = None) -> requests.Response:
        """Send, following redirects by hand; the response's `url` is the hop that answered.

        With a `deadline`, no socket read waits past it and no redirect is followed after it.

        Raises:
            InvalidInputError: a hop is not allowed, too many redirects, or a 4xx answer.
            LimitExceeded: the deadline passed.
            RetryableError: connection failure, timeout, 408/429/5xx.
        """
        target = self.check(url).url
        if params:
            target = requests.Request("GET", target, params=params).prepare().url or target
            target = self.check(target).url
        body = json
        for _ in range(self.policy.max_redirects + 1):
            if deadline is not None:
                deadline.check(f"{method} {_shown(target)}")
            response = self._send(method, target, body, stream=stream, deadline=deadline)
            if response.status_code not in REDIRECTS:
                if response.status_code >= 300:
                    response.close()
                    raise_for_status(response, f"{method} {_shown(target)}")
                return response
            location = response.headers.get("Location")
            response.close()
            if not location:
                raise InvalidInputError(f"{method} {_shown(target)}: redirect without a Location")
            target = self.check(urljoin(target, location)).url
            if response.status_code in (301, 302, 303):
                method, body = "GET", None
        raise InvalidInputError(f"{_shown(url)}: more than {self.policy.max_redirects} redirects")

    def get_json(self, method: str, url: str, *, params: dict[str, str] | None = None, json: Any = None,
                 deadline: Deadline | None = None) -> tuple[Any, str]:
        """(the answer's JSON, the URL of the hop that gave it), bounded by `max_bytes` and in total time by
        the policy's `request_seconds` (or the caller's `deadline`, when that comes first)."""
        deadline = sooner(Deadline(self.policy.request_seconds, self.policy.request_setting), deadline)
        with self.request(method, url, params=params, json=json, stream=True, deadline=deadline) as response:
            data = b"".join(self.iter_bytes(response, limit=min(self.policy.max_bytes, MAX_JSON_BYTES), deadline=deadline))
            where = response.url
        try:
            return orjson.loads(data), where
        except orjson.JSONDecodeError:
            raise InvalidInputError(f"{method} {_shown(where)} did not answer JSON") from None

    def iter_bytes(self, response: requests.Response, *, limit: int | None = None,
                   deadline: Deadline | None = None) -> Iterator[bytes]:
        """The body (decoded) in chunks as they arrive, stopping with LimitExceeded past `limit` bytes (default
        `max_bytes`) or past the `deadline`."""
        limit = self.policy.max_bytes if limit is None else limit
        total = 0
        what = f"GET {_shown(response.url)}"
        try:
            while True:
                if deadline is not None:
                    deadline.check(what)
                    _shorten_read_timeout(response, deadline)
                chunk = response.raw.read1(READ_SIZE, decode_content=True)
                if not chunk:
                    return
                total += len(chunk)
                if total > limit:
                    raise LimitExceeded(f"{_shown(response.url)} is larger than {describe_bytes(limit)}")
                yield chunk
        except (requests.exceptions.ContentDecodingError, urllib3_errors.DecodeError):
            raise InvalidInputError(f"{what}: the body does not match its Content-Encoding") from None
        except (requests.RequestException, urllib3_errors.HTTPError, OSError):
            if deadline is not None:
                deadline.check(what)  # a read cut short by the deadline is the deadline's, not a broken connection
            raise RetryableError(f"{what}: the connection broke") from None

    def _send(self, method: str, url: str, body: Any, *, stream: bool, deadline: Deadline | None = None) -> requests.Response:
        read = self.policy.timeout if deadline is None else max(0.001, min(self.policy.timeout, deadline.remaining()))
        try:
            return self._session.request(method, url, json=body, allow_redirects=False, stream=stream,
                                         timeout=(min(10.0, read), read))
        except InvalidIPAddress:
            raise InvalidInputError(f"{method} {_shown(url)}: the host resolves to a forbidden address") from None
        except (requests.Timeout, requests.ConnectionError):
            if deadline is not None:
                deadline.check(f"{method} {_shown(url)}")
            raise RetryableError(f"{method} {_shown(url)} failed to connect or timed out") from None
        except requests.RequestException as error:  # a URL requests cannot send (after our checks: rare)
            raise InvalidInputError(f"{method} {_shown(url)}: {type(error).__name__}") from None


class _PinnedAdapter(IPFilterAdapter):
    """requests-hardened's adapter (resolves, pins the connection to the address, keeps Host/SNI/cert
    checks on the name), with our rules applied to the pinned address too."""

    def build_connection_pool_key_attributes(self, request: requests.PreparedRequest, verify: Any, cert: Any = None) -> Any:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        pinned = ipaddress.ip_address(str(host_params["host"]).strip("[]"))
        if forbidden_reason(pinned, allow_loopback=self._allow_loopback):
            raise InvalidIPAddress(pinned)
        return host_params, pool_kwargs


def hardened_session(policy: EgressPolicy) -> requests.Session:
    """A requests-hardened session: no redirects, timeouts always, connections pinned to checked addresses."""
    session = HTTPSession(Config(ip_filter_enable=True, ip_filter_allow_loopback_ips=policy.allow_loopback,
                                 never_redirect=True, default_timeout=(10.0, policy.timeout)))
    session.trust_env = False  # no proxy (it would defeat the pinning) and no .netrc credentials
    for scheme in ("http://", "https://"):
        session.mount(scheme, _PinnedAdapter(is_https_proto=scheme == "https://", allow_loopback=policy.allow_loopback))
    return session


def _shorten_read_timeout(response: requests.Response, deadline: Deadline) -> None:
    """Let the next socket read wait no longer than the time the deadline leaves (urllib3 sets it per read)."""
    connection = getattr(response.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        sock.settimeout(max(0.001, min(deadline.remaining(), sock.gettimeout() or deadline.remaining())))


def raise_for_status(response: requests.Response, what: str) -> None:
    """RetryableError for 408/429/5xx, InvalidInputError for other 4xx (and 3xx not followed) answers of a source."""
    status = response.status_code
    if status in RETRYABLE_STATUSES:
        raise RetryableError(f"{what}: {status}", status=status, retry_after=_retry_after(response))
    if status >= 300:
        raise InvalidInputError(f"{what}: {status}")


def _retry_after(response: requests.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def _shown(url: object) -> str:
    """A URL as it may appear in rows and logs: no query string, no userinfo, bounded."""
    try:
        return url_without_query(str(url)[:300])
    except ValueError:
        return "(unparsable URL)"
