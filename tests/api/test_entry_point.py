"""Where SlipStream's clients start: the cloud entry point (the collections this server serves,
each at the path it names) and the session templates, readable before any login."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_the_cloud_entry_point_names_the_collections_served(api: TestClient) -> None:
    bare = TestClient(api.app)  # a client reads it before it logs in
    entry = bare.get("/api/cloud-entry-point")
    assert entry.status_code == 200
    body = entry.json()
    assert body["id"] == "cloud-entry-point"
    assert body["resourceURI"] == "http://schemas.dmtf.org/cimi/2/CloudEntryPoint"
    assert body["baseURI"] == "http://testserver/api/"
    assert body["sessions"] == {"href": "session"}
    assert body["sessionTemplates"] == {"href": "session-template"}
    assert body["events"] == {"href": "event"}
    for name, link in body.items():  # every collection named is served
        if isinstance(link, dict) and "href" in link:
            assert bare.put(f"/api/{link['href']}").status_code in (200, 401), name


def test_the_session_templates_are_the_two_ways_to_log_in(api: TestClient) -> None:
    bare = TestClient(api.app)
    listing = bare.get("/api/session-template").json()
    assert listing["count"] == 2
    assert [t["id"] for t in listing["sessionTemplates"]] == [
        "session-template/internal",
        "session-template/api-key",
    ]
    internal = bare.get("/api/session-template/internal").json()
    assert (internal["method"], internal["username"], internal["password"]) == (
        "internal",
        "username",
        "password",
    )
    assert bare.get("/api/session-template/oidc").status_code == 404
