"""What continuous verification asks of a fetched repository: its branches, its commits, the
commits between a good and a bad one, git's own bisect order, and the tree at a commit.

A :class:`Mirror` is a bare repository in the clone cache (``gitcache.Repositories`` fetches
it). Every git command runs through :class:`Git`: never steered by the server's environment
or anybody's configuration, never prompting, bounded in time, and explained when it fails.
Revisions given to a mirror are checked before git sees them (hex digits or an exact branch
name), so none is ever read as an option or as revision syntax.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from stratuslab import proc
from stratuslab.errors import BackendError, CommandFailed, Invalid, NotFound
from stratuslab.verify.gittree import extract_tar, measure_tree
from stratuslab.verify.values import Commit

_HEX = re.compile(r"[0-9a-f]{4,40}")
_FULL = re.compile(r"[0-9a-f]{40}")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")  # no spaces in a revision either
_FORMAT = "%H%x00%an%x00%ae%x00%s%x00%ct"  # with -z: every field and record ends at a NUL
_FIELDS = 5
_MAX_REV = 255
_SHOWN_LINES = 5  # of git's stderr, in an error
_SHOWN_CHARS = 1000
# The variables a site may need to reach a forge; the rest of the server's environment
# (GIT_DIR, GIT_CONFIG_PARAMETERS, GIT_SSH, SSH_AUTH_SOCK, ...) never reaches git.
_PASSED_ON = (
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)


class Git:
    """How git runs here. ``home`` is a private, empty HOME (no user configuration, no
    ~/.ssh); ``known_hosts`` is where ssh records the host keys it meets first."""

    def __init__(self, home: Path, *, known_hosts: Path, timeout_s: float) -> None:
        self.home = home
        self.known_hosts = known_hosts
        self.timeout_s = timeout_s

    def run(
        self,
        args: Sequence[str],
        *,
        git_dir: Path | None = None,
        input: str | None = None,
        protocols: str = "",
        ssh_key: Path | None = None,
        file_limit: int | None = None,
    ) -> proc.Completed:
        """Run ``git ARGS`` (not checked: the caller reads the exit code). Only the
        transports in ``protocols`` (``GIT_ALLOW_PROTOCOL``) are allowed; ``file_limit``
        bounds the size of every file git writes (a pack being fetched), in bytes. A timeout
        raises ``BackendError``."""
        env = {name: os.environ[name] for name in _PASSED_ON if name in os.environ}
        env |= {
            "PATH": os.environ.get("PATH") or "/usr/bin:/bin",
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "LC_ALL": "C",  # git's messages, which errors quote, in English
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_ATTR_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ALLOW_PROTOCOL": protocols,
            "GIT_SSH_VARIANT": "ssh",
            "GIT_SSH_COMMAND": self._ssh(ssh_key),
        }
        command = ["env", "-i", *(f"{k}={v}" for k, v in sorted(env.items()))]
        if file_limit is not None and proc.which("prlimit"):
            command += ["prlimit", f"--fsize={file_limit}"]
        command += ["git", *([f"--git-dir={git_dir}"] if git_dir else []), *args]
        try:
            return proc.run(command, check=False, input=input, timeout=self.timeout_s)
        except CommandFailed as exc:  # only a timeout: the exit code is not checked
            raise BackendError(
                f"git {_subcommand(args)} timed out after {self.timeout_s:g} s",
                hint="the repository is too slow to reach, or too large",
            ) from exc

    def _ssh(self, key: Path | None) -> str:
        # A shell command (git runs it through sh): every path quoted. No agent, no ~/.ssh
        # config or keys of the server's user (ssh reads those from the password database,
        # not HOME), no question asked: a host key met first is recorded, a changed one fails.
        words = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"]
        words += ["-o", "IdentityAgent=none", "-o", "StrictHostKeyChecking=accept-new"]
        words += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        words += ["-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=30"]
        words += ["-i", str(key)] if key is not None else ["-o", "IdentityFile=none"]
        return shlex.join(words)


def said(done: proc.Completed) -> str:
    """What git said, bounded: the last lines of its stderr (or stdout)."""
    text = done.stderr.strip() or done.stdout.strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()][-_SHOWN_LINES:]
    out = " / ".join(lines) or f"exit code {done.returncode}, no message"
    return out if len(out) <= _SHOWN_CHARS else "..." + out[-_SHOWN_CHARS:]


def check_sha(sha: str) -> str:
    """``sha`` if it is a commit id or a prefix of one (4 to 40 hex digits)."""
    if not _HEX.fullmatch(sha):
        raise Invalid(f"{sha[:60]!r} is not a commit id", hint="4 to 40 hex digits")
    return sha


def check_rev(rev: str) -> str:
    """``rev`` if it may name a commit: a sha or a branch, never an option or rev syntax."""
    if not rev or len(rev) > _MAX_REV or _CONTROL.search(rev):
        raise Invalid(f"{rev[:60]!r} is not a commit or a branch name")
    if rev.startswith("-") or ".." in rev:
        raise Invalid(f"{rev[:60]!r} is not a commit or a branch name", hint="no '-', no '..'")
    return rev


@dataclass(frozen=True)
class Mirror:
    """A bare repository in the clone cache: branches and tags as the remote last had them,
    and every commit fetched so far (a forced push's old commits stay until git prunes
    them)."""

    path: Path
    git: Git
    url: str = ""  # as errors show it (no password)

    def heads(self, branches: Sequence[str]) -> dict[str, str | None]:
        """Each branch's commit; None for a branch the repository does not have."""
        done = self._git("for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/")
        known: dict[str, str] = {}
        for line in done.stdout.splitlines():
            sha, _, ref = line.partition(" ")
            known[ref.removeprefix("refs/heads/")] = sha
        return {branch: known.get(branch) for branch in branches}

    def resolve(self, rev: str) -> str:
        """The full sha of ``rev``: a full sha, a branch, or a unique prefix of 4 or more hex
        digits (tried in that order). NotFound if the repository has no such commit; Invalid
        for a prefix several commits share, or a revision that is not a sha or branch."""
        check_rev(rev)
        if not _FULL.fullmatch(rev) and (sha := self.heads([rev])[rev]) is not None:
            return sha
        if not _HEX.fullmatch(rev):
            raise NotFound(f"{self.url} has no branch {rev!r}")
        return self._commits_named([rev])[rev]

    def commit(self, sha: str) -> Commit:
        """The commit ``sha`` (a full sha or a unique prefix); NotFound if unknown."""
        found = self.commits([sha])
        if not found:
            raise NotFound(f"{self.url} has no commit {sha}")
        return found[0]

    def commits(self, shas: Sequence[str]) -> list[Commit]:
        """The commits named, in the order given, in one call to git; those the repository
        does not have (a forced push, a typo) are left out."""
        if not shas:
            return []
        full = self._lookup([check_sha(sha) for sha in shas])
        known = list(dict.fromkeys(sha for sha in full.values() if sha is not None))
        if not known:
            return []
        done = self._git(
            "log", "--no-walk=unsorted", "-z", f"--format={_FORMAT}", "--stdin",
            input="".join(f"{sha}\n" for sha in known),
        )  # fmt: skip
        by_sha = {c.sha: c for c in _parse(done.stdout)}
        return [by_sha[sha] for s in shas if (sha := full[s]) is not None and sha in by_sha]

    def between(self, good: str | None, bad: str, *, limit: int = 1000) -> list[Commit]:
        """The commits reachable from ``bad`` and not from ``good`` (all of ``bad``'s history
        when ``good`` is None), newest first (no parent before its children), at most
        ``limit``. NotFound if either is unknown."""
        if limit < 1:
            raise Invalid("the limit must be 1 or more")
        named = [bad] if good is None else [bad, good]
        full = self._commits_named([check_sha(sha) for sha in named])
        revs = [full[bad]] + ([] if good is None else [f"^{full[good]}"])
        done = self._git(
            "log", "--topo-order", f"--max-count={limit}", "-z", f"--format={_FORMAT}",
            "--end-of-options", *revs,
        )  # fmt: skip
        return _parse(done.stdout)

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether ``ancestor`` is in ``descendant``'s history (a commit is its own
        ancestor). False, not an error, when either is unknown (history was rewritten)."""
        check_sha(ancestor)
        check_sha(descendant)
        done = self.git.run(
            ["merge-base", "--is-ancestor", "--end-of-options", ancestor, descendant],
            git_dir=self.path,
        )
        return done.returncode == 0

    def bisect_next(self, good: Sequence[str], bad: str, *, skip: Sequence[str] = ()) -> str | None:
        """The commit to verify next, in git's own bisect order: the one ``git rev-list
        --bisect`` picks between the ``good`` ones and ``bad``, or with ``skip`` (commits
        whose verdict cannot tell, such as an error), the best ``--bisect-all`` candidate not
        skipped. ``bad`` is never picked.

        None when no candidate is left to verify. Then :meth:`suspects` says where the first
        bad commit is: ``[bad]`` alone (``bad`` is the first bad commit) or, when skipped
        commits remain between, those and ``bad`` (git's "only skipped commits left to
        test": any of them may be the first bad one). NotFound if a commit is unknown."""
        full = self._commits_named([check_sha(sha) for sha in [bad, *good, *skip]])
        skipped = {full[sha] for sha in skip}
        nots = [f"^{full[sha]}" for sha in good]
        if not skipped:
            done = self._git("rev-list", "--bisect", "--end-of-options", full[bad], *nots)
            pick = done.stdout.strip()
            return pick if pick and pick != full[bad] else None
        for sha in self._bisect_all(full[bad], nots):
            if sha != full[bad] and sha not in skipped:
                return sha
        return None

    def suspects(self, good: Sequence[str], bad: str, *, skip: Sequence[str] = ()) -> list[str]:
        """Once :meth:`bisect_next` is None: the commits the first bad one may be, ``bad``
        last (only ``[bad]``: it is the first bad commit). Untested commits, if any are
        left, are in the list too: ask :meth:`bisect_next` first."""
        full = self._commits_named([check_sha(sha) for sha in [bad, *good, *skip]])
        left = self._bisect_all(full[bad], [f"^{full[sha]}" for sha in good])
        return [sha for sha in left if sha != full[bad]] + [full[bad]]

    def export(self, sha: str, dest: Path, *, max_mib: int = 512, max_files: int = 100_000) -> None:
        """Write the tree at commit ``sha`` into ``dest``, an empty directory: regular files
        (executable or not), directories, and symbolic links as git stores them (kept as
        links, never followed: a reader of ``dest`` must not follow one out of it).
        Submodules are left out. The whole tree, as ``.gitattributes`` cannot change it
        (no export-ignore, no export-subst). Over ``max_mib`` MiB or ``max_files`` entries,
        TooLarge and nothing is written; NotFound for an unknown commit. On any failure
        ``dest`` is left empty."""
        full = self._commits_named([check_sha(sha)])[sha]
        if not dest.is_dir() or dest.is_symlink() or any(dest.iterdir()):
            raise Invalid(f"{dest} is not an empty directory")
        listing = self._git("ls-tree", "-r", "-l", "-z", "--full-tree", "--end-of-options", full)
        limit = max_mib * 1024 * 1024
        measure_tree(listing.stdout, max_bytes=limit, max_files=max_files, what=full[:7])
        self._neutral_attributes()
        with tempfile.TemporaryDirectory(dir=self.path.parent, prefix=".export-") as tmp:
            archive = Path(tmp) / "tree.tar"
            self._git("archive", "--format=tar", f"--output={archive}", "--end-of-options", full)
            extract_tar(archive, dest, max_bytes=limit, max_files=max_files)

    # Helpers.

    def _git(self, *args: str, input: str | None = None) -> proc.Completed:
        done = self.git.run(args, git_dir=self.path, input=input)
        if done.returncode != 0:
            raise BackendError(f"git {args[0]} failed in the clone of {self.url}: {said(done)}")
        return done

    def _lookup(self, shas: Sequence[str]) -> dict[str, str | None]:
        """Each sha (or prefix) -> the full sha of that commit, None if unknown; Invalid for
        an ambiguous prefix. One call for all."""
        unique = list(dict.fromkeys(shas))
        done = self._git(
            "cat-file", "--batch-check=%(objectname)",
            input="".join(f"{sha}^{{commit}}\n" for sha in unique),
        )  # fmt: skip
        out: dict[str, str | None] = {}
        for sha, line in zip(unique, done.stdout.splitlines(), strict=True):
            if f"short object ID {sha} is ambiguous" in done.stderr:  # said "missing"
                raise Invalid(f"{sha} names several commits", hint="give more hex digits")
            out[sha] = line if _FULL.fullmatch(line) else None
        return out

    def _commits_named(self, shas: Sequence[str]) -> dict[str, str]:
        full = self._lookup(shas)
        missing = [sha for sha, found in full.items() if found is None]
        if missing:
            raise NotFound(f"{self.url} has no commit {', '.join(missing[:5])}")
        return {sha: found for sha, found in full.items() if found is not None}

    def _bisect_all(self, bad: str, nots: Sequence[str]) -> list[str]:
        done = self._git("rev-list", "--bisect-all", "--end-of-options", bad, *nots)
        return [line[:40] for line in done.stdout.splitlines() if line.strip()]

    def _neutral_attributes(self) -> None:
        # info/attributes wins over the tree's .gitattributes: export writes the tree as
        # stored, whatever the repository asks of `git archive`.
        path = self.path / "info" / "attributes"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".attributes-")
            with os.fdopen(fd, "w") as out:
                out.write("* -export-ignore -export-subst\n")
            Path(tmp).replace(path)  # whole, for an export reading it meanwhile


def _subcommand(args: Sequence[str]) -> str:
    """The git command in ``args`` (after the ``-c name=value`` pairs)."""
    for i, arg in enumerate(args):
        if not arg.startswith("-") and (i == 0 or args[i - 1] != "-c"):
            return arg
    return "command"


def _parse(out: str) -> list[Commit]:
    fields = out.split("\0")
    if fields and fields[-1].strip() == "":
        fields.pop()
    commits = []
    for i in range(0, len(fields) - _FIELDS + 1, _FIELDS):
        sha, author, email, subject, when = fields[i : i + _FIELDS]
        commits.append(
            Commit(
                sha=sha.strip(),
                author=author,
                email=email,
                subject=subject,
                when=datetime.fromtimestamp(int(when), UTC),
            )
        )
    return commits
