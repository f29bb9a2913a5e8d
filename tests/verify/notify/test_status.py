"""Commit statuses: each forge's request as its documentation gives it, checked by a real HTTP
receiver that reads it as that forge's API does, and the forge settings refused when wrong."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from stratuslab.errors import BackendError, Invalid
from stratuslab.verify.notify.status import check_forge, post_status, request_for
from tests.verify.notify.conftest import HEAD
from tests.verify.notify.servers import Receiver

SHA = HEAD.sha
RUN = "http://127.0.0.1:8421/runs/0b6c7d1e"


def forge(kind: str, api: str, repo: str | int, token: str) -> dict[str, Any]:
    return {"kind": kind, "api": api, "repo": repo, "token": token}


def test_github_request() -> None:
    method, url, headers, body = request_for(
        forge("github", "https://api.github.com/", "alice/webapp", "ghp_x"),
        SHA,
        "failure",
        target_url=RUN,
        description="Failed on test.1: curl answered 500",
        context="stratus/webapp",
    )

    assert (method, url) == ("POST", f"https://api.github.com/repos/alice/webapp/statuses/{SHA}")
    assert headers["Authorization"] == "Bearer ghp_x"
    assert headers["Accept"] == "application/vnd.github+json"
    assert headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert body == {
        "state": "failure",
        "target_url": RUN,
        "description": "Failed on test.1: curl answered 500",
        "context": "stratus/webapp",
    }


@pytest.mark.parametrize(
    ("ours", "gitlabs"),
    [("pending", "running"), ("success", "success"), ("failure", "failed"), ("error", "failed")],
)
def test_gitlab_request(ours: str, gitlabs: str) -> None:
    _, url, headers, body = request_for(
        forge("gitlab", "https://gitlab.example.org/api/v4", "group/sub/webapp", "glpat-x"),
        SHA,
        ours,
        target_url=RUN,
        description="d",
        context="stratus/webapp",
    )

    assert url == f"https://gitlab.example.org/api/v4/projects/group%2Fsub%2Fwebapp/statuses/{SHA}"
    assert headers == {"PRIVATE-TOKEN": "glpat-x"}
    assert body == {
        "state": gitlabs,
        "target_url": RUN,
        "description": "d",
        "name": "stratus/webapp",
    }


def test_gitlab_by_project_id() -> None:
    url = request_for(
        forge("gitlab", "https://gitlab.example.org/api/v4", 42, "glpat-x"),
        SHA,
        "success",
        target_url=None,
        description="",
        context="c",
    )[1]

    assert url == f"https://gitlab.example.org/api/v4/projects/42/statuses/{SHA}"


def test_gitea_request() -> None:
    _, url, headers, body = request_for(
        forge("gitea", "https://codeberg.org/api/v1", "alice/webapp", "abc123"),
        SHA,
        "error",
        target_url=RUN,
        description="x" * 500,
        context="stratus/webapp",
    )

    assert url == f"https://codeberg.org/api/v1/repos/alice/webapp/statuses/{SHA}"
    assert headers["Authorization"] == "token abc123"
    assert body["state"] == "error" and body["context"] == "stratus/webapp"
    assert len(body["description"]) == 140  # GitHub's limit, kept for all


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (forge("bitbucket", "https://api.bitbucket.org", "a/b", "t"), "kind"),
        (forge("github", "ftp://api.github.com", "a/b", "t"), "not an http"),
        (forge("github", "https://", "a/b", "t"), "not an http"),
        (forge("github", "https://api.github.com", "justaname", "t"), "not 'owner/name'"),
        (forge("github", "https://api.github.com", "a/b/c", "t"), "not 'owner/name'"),
        (forge("gitea", "https://g.example", "../etc", "t"), "not 'owner/name'"),
        (forge("gitlab", "https://g.example/api/v4", "group/..", "t"), "neither a GitLab"),
        (forge("gitlab", "https://g.example/api/v4", "a b", "t"), "neither a GitLab"),
        (forge("github", "https://api.github.com", "a/b", ""), "token"),
        (forge("github", "https://api.github.com", "a/b", "t\r\nX-Evil: 1"), "token"),
        ({**forge("github", "https://api.github.com", "a/b", "t"), "extra": 1}, "unknown key"),
        ("github", "an object"),
    ],
)
def test_bad_forge_settings_are_refused(bad: Any, says: str) -> None:
    with pytest.raises(Invalid, match=says):
        check_forge(bad)


def test_bad_status_arguments_are_refused() -> None:
    ok = forge("github", "https://api.github.com", "a/b", "t")
    with pytest.raises(Invalid, match="full commit sha"):
        request_for(ok, "3f2a9c1", "success", target_url=None, description="", context="c")
    with pytest.raises(Invalid, match="state"):
        request_for(ok, SHA, "running", target_url=None, description="", context="c")
    with pytest.raises(Invalid, match="target_url"):
        request_for(ok, SHA, "success", target_url="javascript:x", description="", context="c")


@pytest.mark.parametrize(
    ("kind", "api_path", "repo", "token"),
    [
        ("github", "", "alice/webapp", "ghp_token1"),
        ("gitlab", "/api/v4", "alice/webapp", "glpat-token2"),
        ("gitlab", "/api/v4", "17", "glpat-token2"),
        ("gitea", "/api/v1", "alice/webapp", "gitea-token3"),
    ],
)
@pytest.mark.parametrize("state", ["pending", "success", "failure", "error"])
def test_each_forge_accepts_our_status(
    receiver: Receiver, kind: str, api_path: str, repo: str, token: str, state: str
) -> None:
    with httpx.Client() as client:
        post_status(
            forge(kind, receiver.url + api_path, repo, token),
            SHA,
            state,
            target_url=RUN,
            description="y" * 300,
            context="stratus/webapp",
            client=client,
        )

    [seen] = receiver.seen
    assert (seen.answered, seen.complaint) == (201, "")
    if kind == "gitlab" and not repo.isdigit():
        assert seen.path == f"/api/v4/projects/alice%2Fwebapp/statuses/{SHA}"


def test_a_wrong_token_is_reported(receiver: Receiver) -> None:
    with httpx.Client() as client, pytest.raises(BackendError) as caught:
        post_status(
            forge("github", receiver.url, "alice/webapp", "ghp_wrong"),
            SHA,
            "success",
            target_url=RUN,
            description="",
            context="stratus/webapp",
            client=client,
        )

    assert "the github status API" in str(caught.value)
    assert "answered 401" in str(caught.value) and "Bad credentials" in str(caught.value)
    assert "ghp_wrong" not in str(caught.value)
