"""Walking a static catalog: relative links, a cycle visited once, unreachable links reported with the link as
label, the caps (depth, documents, items, time), links that leave the root's container or host refused without
a fetch; and the walk through the real fetch paths (the guarded HTTP session, Azurite blobs)."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from azure.storage.blob import BlobServiceClient

from shared.errors import InvalidInputError, RetryableError
from shared.inputs.egress import EgressPolicy, GuardedSession
from shared.inputs.static_catalog import CatalogItem, CatalogLimits, UnreachableLink, absolute_asset_hrefs, walk_catalog
from shared.items import validate_job
from shared.store.payloads import PayloadStore
from tests.corpus import corpus_items

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ITEM = corpus_items("pc-ingest-items.ndjson")[0]


class FileFetch:
    """Blob names `container/path` read from a folder (the container is the folder), counting fetches."""

    def __init__(self, folder: Path, container: str = "c") -> None:
        self.folder = folder
        self.container = container
        self.fetched: list[str] = []

    def __call__(self, name: str) -> bytes:
        self.fetched.append(name)
        container, _, path = name.partition("/")
        file = self.folder / path
        if container != self.container or not file.is_file():
            raise InvalidInputError(f"blob {name!r} does not exist")
        return file.read_bytes()


def catalog(links: list[dict[str, str]], kind: str = "Catalog") -> dict[str, Any]:
    return {"type": kind, "id": "x", "stac_version": "1.1.0", "description": "d", "links": links}


def item(item_id: str) -> dict[str, Any]:
    return {**ITEM, "id": item_id}


def write(folder: Path, documents: dict[str, Any]) -> FileFetch:
    for path, document in documents.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(document if isinstance(document, bytes) else orjson.dumps(document))
    return FileFetch(folder)


def walk(root: str, fetch: Any, **limits: Any) -> tuple[list[str], dict[str, str]]:
    """(item ids in order, {label: error} of the links not followed)."""
    ids: list[str] = []
    problems: dict[str, str] = {}
    for entry in walk_catalog(root, fetch, limits=CatalogLimits(**limits)):
        if isinstance(entry, CatalogItem):
            ids.append(entry.item["id"])
        else:
            problems[entry.label] = entry.error
    return ids, problems


def test_the_example_catalog_gives_its_five_valid_items() -> None:
    fetch = FileFetch(EXAMPLES, container="examples")
    entries = list(walk_catalog("examples/naip-catalog/catalog.json", fetch))
    assert all(isinstance(entry, CatalogItem) for entry in entries)
    items = [entry.item for entry in entries if isinstance(entry, CatalogItem)]
    assert [i["id"] for i in items] == [i["id"] for i in corpus_items("pgstac-pc-naip-items-300.ndjson")[:5]]
    assert len(validate_job(items, "naip").valid) == 5
    assert entries[0].href.startswith("examples/naip-catalog/naip/")


def test_relative_links_resolve_against_their_own_document(tmp_path: Path) -> None:
    fetch = write(tmp_path, {
        "cat/catalog.json": catalog([{"rel": "child", "href": "./sub/collection.json"},
                                     {"rel": "item", "href": "top.json"}, {"rel": "self", "href": "nowhere.json"}]),
        "cat/top.json": item("top"),
        "cat/sub/collection.json": catalog([{"rel": "item", "href": "../items/a.json"},
                                            {"rel": "item", "href": "/c/cat/items/b.json#frag"},
                                            {"rel": "child", "href": "deeper/catalog.json"}], kind="Collection"),
        "cat/items/a.json": item("a"),
        "cat/items/b.json": item("b"),
        "cat/sub/deeper/catalog.json": catalog([{"rel": "item", "href": "c.json"}]),
        "cat/sub/deeper/c.json": item("c"),
    })
    ids, problems = walk("c/cat/catalog.json", fetch)
    assert (ids, problems) == (["top", "a", "b", "c"], {})  # breadth-first: the root's items, then level 1, ...
    assert "c/cat/nowhere.json" not in fetch.fetched  # only child and item links are followed


def test_a_cycle_of_links_is_visited_once(tmp_path: Path) -> None:
    fetch = write(tmp_path, {
        "catalog.json": catalog([{"rel": "child", "href": "a/catalog.json"}, {"rel": "child", "href": "./catalog.json"}]),
        "a/catalog.json": catalog([{"rel": "child", "href": "../catalog.json"}, {"rel": "child", "href": "../a/./catalog.json"},
                                   {"rel": "item", "href": "i.json"}]),
        "a/i.json": item("i"),
    })
    ids, problems = walk("c/catalog.json", fetch)
    assert (ids, problems) == (["i"], {})
    assert sorted(fetch.fetched) == ["c/a/catalog.json", "c/a/i.json", "c/catalog.json"]


def test_unreachable_and_wrong_links_are_reported_with_the_link_and_the_rest_goes_on(tmp_path: Path) -> None:
    fetch = write(tmp_path, {
        "catalog.json": catalog([{"rel": "child", "href": "missing/catalog.json"}, {"rel": "item", "href": "broken.json"},
                                 {"rel": "item", "href": "catalog-not-item.json"}, {"rel": "child", "href": "item-not-catalog.json"},
                                 {"rel": "item", "href": 42}, {"rel": "item", "href": "ok.json?sig=secret"}]),
        "broken.json": b"{not json",
        "catalog-not-item.json": catalog([]),
        "item-not-catalog.json": item("x"),
        "ok.json": item("ok"),
    })

    def fetch_ignoring_query(name: str) -> bytes:
        return fetch(name.split("?")[0])

    ids, problems = walk("c/catalog.json", fetch_ignoring_query)
    assert ids == ["ok"]
    assert problems["c/missing/catalog.json"].startswith("unreachable: blob 'c/missing/catalog.json' does not exist")
    assert problems["c/broken.json"] == "unreachable: the document is not JSON"
    assert problems["c/catalog-not-item.json"] == "an item link to something that is not a STAC Item"
    assert problems["c/item-not-catalog.json"] == "a child link to something that is not a Catalog or Collection"
    assert problems["(href '42' in c/catalog.json)"] == "the link has no usable href"
    assert not any("secret" in label or "secret" in error for label, error in problems.items())


def test_a_transient_failure_below_the_root_is_reported_as_such(tmp_path: Path) -> None:
    fetch = write(tmp_path, {"catalog.json": catalog([{"rel": "item", "href": "a.json"}, {"rel": "item", "href": "b.json"}]),
                             "b.json": item("b")})

    def flaky(name: str) -> bytes:
        if name.endswith("a.json"):
            raise RetryableError("GET https://h/a.json: 503")
        return fetch(name)

    ids, problems = walk("c/catalog.json", flaky)
    assert ids == ["b"] and problems == {"c/a.json": "unreachable for now: GET https://h/a.json: 503"}


def test_links_that_leave_the_root_folder_container_or_host_are_refused_unfetched(tmp_path: Path) -> None:
    fetch = write(tmp_path, {"cat/catalog.json": catalog([
        {"rel": "item", "href": "../../other/x.json"}, {"rel": "child", "href": "/other/catalog.json"},
        {"rel": "item", "href": "https://evil.example/x.json"}, {"rel": "item", "href": "../../../../x.json"},
        {"rel": "item", "href": "../beside.json"}, {"rel": "child", "href": "../cat2/catalog.json"},
        {"rel": "item", "href": "./sub/../inside.json"}]),
        "cat/inside.json": item("inside")})
    (tmp_path / "beside.json").write_bytes(orjson.dumps(item("beside")))
    ids, problems = walk("c/cat/catalog.json", fetch)
    assert ids == ["inside"]
    assert problems == {"other/x.json": "the link leaves the catalog's container",
                        "other/catalog.json": "the link leaves the catalog's container",
                        "https://evil.example/x.json": "the link leaves the blob storage",
                        "x.json": "the link leaves the catalog's container",
                        "c/beside.json": "the link leaves the catalog's folder",
                        "c/cat2/catalog.json": "the link leaves the catalog's folder"}
    assert fetch.fetched == ["c/cat/catalog.json", "c/cat/inside.json"]


def test_a_url_catalog_stays_on_its_host() -> None:
    documents = {"https://data.example/stac/catalog.json": catalog([
        {"rel": "item", "href": "https://other.example/i.json"}, {"rel": "item", "href": "//other.example/j.json"},
        {"rel": "item", "href": "http://data.example/k.json"}, {"rel": "item", "href": "items/ok.json"}]),
        "https://data.example/stac/items/ok.json": item("ok")}
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return orjson.dumps(documents[url])

    ids, problems = walk("https://data.example/stac/catalog.json", fetch)
    assert ids == ["ok"] and set(problems.values()) == {"the link leaves the catalog's host"}
    assert set(problems) == {"https://other.example/i.json", "https://other.example/j.json", "http://data.example/k.json"}
    assert fetched == ["https://data.example/stac/catalog.json", "https://data.example/stac/items/ok.json"]


def chain(folder: Path, levels: int) -> FileFetch:
    """catalog.json -> l1/catalog.json -> l1/l2/catalog.json ..., each with one item."""
    documents: dict[str, Any] = {}
    for level in range(levels):
        prefix = "".join(f"l{n}/" for n in range(1, level + 1))
        documents[f"{prefix}catalog.json"] = catalog([{"rel": "child", "href": f"l{level + 1}/catalog.json"},
                                                      {"rel": "item", "href": f"item{level}.json"}])
        documents[f"{prefix}item{level}.json"] = item(f"item{level}")
    return write(folder, documents)


def test_depth_is_capped_and_the_links_below_are_reported(tmp_path: Path) -> None:
    ids, problems = walk("c/catalog.json", chain(tmp_path, 5), max_depth=2)
    assert ids == ["item0", "item1"]  # items at depth 1 and 2; l1/l2/catalog.json (depth 2) is read for its links
    assert problems == {"c/l1/l2/l3/catalog.json": "deeper than 2 links below the root",
                        "c/l1/l2/item2.json": "deeper than 2 links below the root"}


def test_documents_are_capped(tmp_path: Path) -> None:
    ids, problems = walk("c/catalog.json", chain(tmp_path, 5), max_documents=3)
    assert ids == ["item0", "item1", "item2"]
    assert problems == {"c/l1/l2/l3/catalog.json": "over the cap of 3 documents"}


def test_items_are_capped_and_the_walk_stops_with_one_report(tmp_path: Path) -> None:
    ids, problems = walk("c/catalog.json", chain(tmp_path, 5), max_items=2)
    assert ids == ["item0", "item1"]
    assert problems == {"c/l1/l2/item2.json": "not visited: the walk stopped at the cap of 2 items"}


def test_time_is_capped_and_the_walk_stops_with_one_report(tmp_path: Path) -> None:
    fetch = chain(tmp_path, 5)
    now = [0.0]

    def slow_fetch(name: str) -> bytes:
        now[0] += 10.0  # each fetch takes 10 s on this clock
        return fetch(name)

    entries = list(walk_catalog("c/catalog.json", slow_fetch, limits=CatalogLimits(max_seconds=35), clock=lambda: now[0]))
    assert [e.item["id"] for e in entries if isinstance(e, CatalogItem)] == ["item0", "item1"]
    stopped = [e for e in entries if isinstance(e, UnreachableLink)]
    assert len(stopped) == 1 and stopped[0].error.startswith("not visited: the walk stopped after 35 s")
    assert len(fetch.fetched) == 4


def many_items(folder: Path, count: int) -> FileFetch:
    """One catalog linking `count` items, i0.json ..., with a link that cannot be followed after the second."""
    links = [{"rel": "item", "href": f"i{n}.json"} for n in range(count)]
    links.insert(2, {"rel": "item", "href": "https://elsewhere.example/x.json"})
    return write(folder, {"catalog.json": catalog(links)} | {f"i{n}.json": item(f"i{n}") for n in range(count)})


def test_the_items_of_one_catalog_are_fetched_together_and_given_back_in_link_order(tmp_path: Path) -> None:
    fetch = many_items(tmp_path, 20)
    together = threading.Barrier(8, timeout=30)  # broken (and the walk fails) unless 8 fetches wait at once
    last_of_the_eight = threading.Event()
    in_flight, most = [0], [0]
    lock = threading.Lock()

    def slow_fetch(name: str) -> bytes:
        number = int(name.rsplit("/i", 1)[1].split(".")[0]) if "/i" in name else -1
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        try:
            if 0 <= number < 8:
                together.wait()
            if number == 0:
                assert last_of_the_eight.wait(timeout=30)  # the first link's document arrives after the eighth's
            if number == 7:
                last_of_the_eight.set()
            return fetch(name)
        finally:
            with lock:
                in_flight[0] -= 1

    entries = list(walk_catalog("c/catalog.json", slow_fetch))
    labels = [e.item["id"] if isinstance(e, CatalogItem) else e.label for e in entries]
    assert labels == ["i0", "i1", "https://elsewhere.example/x.json"] + [f"i{n}" for n in range(2, 20)]
    assert most[0] == 8  # the pool's bound: never more at once


def test_the_item_cap_fetches_no_document_past_it_even_in_parallel(tmp_path: Path) -> None:
    fetch = many_items(tmp_path, 30)
    ids, problems = walk("c/catalog.json", fetch, max_items=5)
    assert ids == [f"i{n}" for n in range(5)]
    assert problems == {"https://elsewhere.example/x.json": "the link leaves the blob storage",
                        "c/i5.json": "not visited: the walk stopped at the cap of 5 items"}
    assert sorted(fetch.fetched) == sorted(["c/catalog.json"] + [f"c/i{n}.json" for n in range(5)])


@pytest.mark.parametrize(("root", "documents", "reason"), [
    ("c/catalog.json", {"catalog.json": item("i")}, "is not a STAC Catalog or Collection"),
    ("c/catalog.json", {}, "does not exist"),
    ("http://data.example/catalog.json", {}, "a catalog root is an https URL or a blob name"),
    ("catalog.json", {}, "must be 'container/path'"),
])
def test_a_bad_root_refuses_the_job(root: str, documents: dict[str, Any], reason: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        list(walk_catalog(root, write(tmp_path, documents)))


def test_relative_asset_hrefs_become_absolute() -> None:
    given = {**ITEM, "assets": {"a": {"href": "./image.tif"}, "b": {"href": "https://x.example/b.tif"}, "c": {"title": "no href"}}}
    made = absolute_asset_hrefs(given, "https://data.example/stac/items/i.json")
    assert made["assets"] == {"a": {"href": "https://data.example/stac/items/image.tif"},
                              "b": {"href": "https://x.example/b.tif"}, "c": {"title": "no href"}}
    assert given["assets"]["a"]["href"] == "./image.tif"


@pytest.fixture
def examples_server() -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(EXAMPLES))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_walking_over_http_through_the_guarded_session(examples_server: str) -> None:
    session = GuardedSession(EgressPolicy(allowed_hosts=frozenset({"127.0.0.1"}), allow_loopback=True, max_bytes=1 << 20))

    def fetch(url: str) -> bytes:
        with session.request("GET", url, stream=True) as response:
            return b"".join(session.iter_bytes(response))

    root = f"{examples_server}/naip-catalog/catalog.json"
    entries = list(walk_catalog(root, fetch))
    assert len([e for e in entries if isinstance(e, CatalogItem)]) == 5
    assert all(isinstance(e, CatalogItem) and e.href.startswith(f"{examples_server}/naip-catalog/naip/") for e in entries)

    refusing = GuardedSession(EgressPolicy(allowed_hosts=frozenset({"data.example"}), allow_loopback=True))
    with pytest.raises(InvalidInputError, match="not on SOURCE_URL_ALLOWLIST"):
        list(walk_catalog(root, lambda url: refusing.get_json("GET", url)[0]))


def test_walking_a_catalog_uploaded_to_blob_storage(azurite: Any) -> None:
    store = PayloadStore(BlobServiceClient.from_connection_string(azurite.connection_string), "catalog-test")
    store.ensure()
    for path in (EXAMPLES / "naip-catalog").rglob("*.json"):
        store.put(f"upload/{path.relative_to(EXAMPLES).as_posix()}", path.read_bytes())
    store.put("upload/naip-catalog/naip/extra.json", orjson.dumps(item("extra")))  # not linked: not walked
    entries = list(walk_catalog("catalog-test/upload/naip-catalog/catalog.json", store.read))
    items = [e.item["id"] for e in entries if isinstance(e, CatalogItem)]
    assert len(items) == 5 and "extra" not in items and len(entries) == 5
