"""Baking: a component's install steps run once, kept as an image, used by every deployment.

A bake is a run: the plan of one node of the component (``plan.component_node``) holding only
its install steps (``bake_digest.install_only``), recorded as its owner's run (their quota,
their rights), provisioned, run by the agent and watched like any other, so that progress,
events, logs, abort reasons and teardown are those of a deployment. Its keep-running policy
is on-success: a recipe that fails aborts it and tears it down, and nothing is published.
Once it is Ready, the server finishes it (:meth:`Bakery._finish`): it reads the installed
versions of the packages, cleans the instance (``bake_clean``), publishes it under
``<owner>/bake-<digest>`` and records it in the catalog (origin ``bake``), tells it in the
event ``baked``, then terminates the run, whose teardown destroys the instance. Whatever fails
then aborts the run with the reason, and an image published but not recorded is deleted.

The instance is published from a snapshot while it runs, as the contract's ``publish_image``
does for a running instance: a stopped machine in a Ready run would be judged lost by the
supervisor. What could write to it (the agent) was stopped by the clean-up, which syncs.

A deployment's run (``RunService.create``) asks :meth:`Bakery.choose` once: every node whose
digest has a baked image of the run's owner on its cloud starts from it with only its
deployment steps in the plan (``bake_digest.from_baked``); the plan keeps it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from stratuslab.cloud.catalog import Catalog, Owned
from stratuslab.cloud.instances import InstanceService
from stratuslab.db.models import RunRecord
from stratuslab.db.session import session_scope
from stratuslab.deploy import access, bake_clean, bake_digest, events
from stratuslab.deploy.control import RunControl
from stratuslab.deploy.model import DEFAULT_CLOUD, ApplicationModule, ComponentModule
from stratuslab.deploy.modules import ModuleStore, split_address
from stratuslab.deploy.plan import NodePlan, Plan, component_node
from stratuslab.deploy.references import resolve_reference
from stratuslab.deploy.rights import Right
from stratuslab.deploy.runs import RunRequest, RunService
from stratuslab.deploy.states import FINAL, KeepRunning, RunState
from stratuslab.deploy.tx import transaction
from stratuslab.errors import BackendError, Invalid, NotFound, StratusError
from stratuslab.hub import Hub
from stratuslab.principal import SERVER, Principal

log = logging.getLogger(__name__)
BAKE_TIMEOUT_S = 3600  # a bake not Ready within the hour is aborted, as a run timeout does
EXEC_TIMEOUT_S = 300.0
_NODE = "abcdefghijklmnopqrstuvwxyz0123456789"


class Bakery:
    """Bakes components into images and says which nodes a deployment starts baked."""

    def __init__(
        self,
        engine: Engine,
        hub: Hub,
        *,
        modules: ModuleStore,
        runs: RunService,
        control: RunControl,
        instances_for: Callable[[str], InstanceService],
        submit: Callable[..., object],
        timeout_s: float = BAKE_TIMEOUT_S,
    ) -> None:
        self.engine = engine
        self.hub = hub
        self.modules = modules
        self.runs = runs
        self.control = control
        self.instances_for = instances_for
        self.submit = submit
        self.timeout_s = timeout_s
        self.catalog = Catalog(engine)
        self._baking: dict[tuple[str, str, str], str] = {}  # (owner, cloud, digest) -> run id
        self._lock = threading.Lock()
        self._closing = threading.Event()

    def close(self) -> None:
        """Stop waiting for bakes: the server is going (a bake left Ready is aborted by the
        next server, :meth:`resume`)."""
        self._closing.set()

    def resume(self) -> None:
        """At a server's start: the bakes a previous server left unfinished are aborted (their
        run is torn down; nothing was recorded), since only the server that started a bake
        finishes it."""
        with session_scope(self.engine) as session:
            left = session.scalars(
                select(RunRecord.id).where(
                    RunRecord.tags.startswith("bake,"),
                    RunRecord.state.not_in([s.value for s in FINAL | {RunState.FINALIZING}]),
                )
            ).all()
        for run_id in left:
            self.control.abort(run_id, "bake: the server stopped before it finished; bake again")

    # -- baking ---------------------------------------------------------------------------

    def bake(self, module: str, *, cloud: str | None, caller: Principal) -> dict[str, Any]:
        """Bake the component ``module`` (path or path/N) for ``caller`` on ``cloud``.

        Answers at once ``{"cached": True, "image": ...}`` when an image of the same digest
        exists for the caller there; else starts the bake's run and answers ``{"cached":
        False, "run": ..., "digest", "image": {"name"}}`` (the run of a bake of the same
        digest already under way, when there is one)."""
        access.users_only(caller, "bake images")
        owner = caller.user or ""
        if not owner:
            raise Invalid("only a user bakes images")
        plan = self.component_plan(module, cloud=cloud or DEFAULT_CLOUD, caller=caller)
        (node,) = plan.nodes.values()
        service = self.instances_for(owner)
        images = self.images_of(service, node.cloud)
        value = self.digest_of(node, images)
        name = bake_digest.alias(owner, value)
        found = self._found(owner, node.cloud, name, value, images)
        if found is not None:
            return {"cached": True, "digest": value, "image": public(found)}
        if not bake_digest.installs(node):
            raise Invalid(
                f"{node.component} has no pre-install, packages or post-install: nothing to bake",
                hint="its deployments start from its pristine image as they are",
            )
        key = (owner, node.cloud, value)
        with self._lock:
            under_way = self._baking.get(key)
            if under_way is None or self.runs.ended(under_way):
                request = RunRequest(
                    module=f"{node.component}/{node.component_version}",
                    keep_running=KeepRunning.ON_SUCCESS,
                    tags=("bake", f"bake:{value[:16]}"),
                    timeout_s=self.timeout_s,
                )
                bake_plan = replace(plan, nodes={node.name: bake_digest.install_only(node)})
                under_way = self.runs.record(bake_plan, request, caller=caller)["id"]
                self._baking[key] = under_way
                base = images[node.image]
                self.submit(self._finish, under_way, owner, node, value, base, time.monotonic())
        run = self.runs.view(under_way, caller=caller)
        return {"cached": False, "digest": value, "image": {"name": name}, "run": run}

    def bake_application(self, module: str, *, caller: Principal) -> list[dict[str, Any]]:
        """Bake every node's component of the application ``module`` that lacks a baked image
        (``stratus deploy --bake``): one answer of :meth:`bake` per node, with ``node``; a
        node with nothing to bake answers ``nothing``. The bakes run at once, side by side."""
        path, version = split_address(module)
        stored = self.modules.get(path, version, caller=caller, need=Right.RUN)
        application = stored.parse()
        if not isinstance(application, ApplicationModule):
            raise Invalid(f"{path} is {stored.kind}: --bake bakes an application's components")
        answers: list[dict[str, Any]] = []
        for name, node in application.nodes.items():
            component, pinned = resolve_reference(node.component, base=application.base)
            address = component if pinned is None else f"{component}/{pinned}"
            try:
                answer = self.bake(address, cloud=node.cloud, caller=caller)
            except Invalid as exc:
                if "nothing to bake" not in exc.message:
                    raise
                answer = {"cached": True, "nothing": True, "image": None}
            answers.append({"node": name, "component": component} | answer)
        return answers

    def component_plan(self, module: str, *, cloud: str, caller: Principal) -> Plan:
        """The one-node plan of the component ``module`` on ``cloud``, as ``caller`` reads it."""
        path, version = split_address(module)
        stored = self.modules.get(path, version, caller=caller, need=Right.RUN)
        component = stored.parse()
        if not isinstance(component, ComponentModule):
            raise Invalid(f"{path} is {stored.kind}: bake a component", hint="see docs/modules.md")
        leaf = path.rsplit("/", 1)[-1].lower()
        name = leaf if leaf[:1].isalpha() and set(leaf) <= set(_NODE + "-") else "bake"
        return component_node(
            component, stored.version, self.modules.lookup_for(caller), cloud=cloud, name=name[:40]
        )

    def digest_of(self, node: NodePlan, images: Mapping[str, str]) -> str:
        base = images.get(node.image)
        if base is None:
            raise NotFound(
                f"no image {node.image!r} on cloud {node.cloud!r} for {node.component}",
                hint="see `stratus image list`, or build one with `stratus image build debian-12`",
            )
        return bake_digest.digest(node, base_fingerprint=base)

    def _finish(
        self, run_id: str, owner: str, node: NodePlan, value: str, base: str, began: float
    ) -> None:
        """Once the bake's run is Ready: clean, publish, record, tell, and tear down."""
        try:
            if not self._ready(run_id):
                return  # aborted (a recipe failed), cancelled or timed out: torn down
            service = self.instances_for(owner)
            machine = self.runs.view(run_id, caller=SERVER)["nodes"][0]["instance_id"]
            packages = self._installed(service, machine, node.packages)
            cleaned = service.exec(machine, bake_clean.COMMAND, timeout=EXEC_TIMEOUT_S)
            if cleaned.exit_code != 0 or bake_clean.DONE not in cleaned.stdout:
                tail = (cleaned.stderr.strip().splitlines() or ["no output"])[-1]
                raise BackendError(f"cleaning the instance failed ({cleaned.exit_code}): {tail}")
            name = bake_digest.alias(owner, value)
            details = {
                "digest": value,
                "component": node.component,
                "version": node.component_version,
                "cloud": node.cloud,
                "base": node.image,
                "base_fingerprint": base,
                "packages": packages,
                "run": run_id,
            }
            # Recorded before the backend makes it, so that it is never an unrecorded image
            # (which would be the site's, anybody's); given its fingerprint once made.
            self.catalog.reserve(
                cloud=node.cloud, alias=name, owner=owner, origin="bake", details=details
            )
            try:
                image = service.publish(
                    machine,
                    alias=name,
                    properties={"stratus.bake": value, "stratus.component": node.component},
                    description=f"{node.component}/{node.component_version} baked",
                )
                self.catalog.settle(cloud=node.cloud, alias=name, fingerprint=image.fingerprint)
            except BaseException:
                with contextlib.suppress(StratusError):
                    service.delete_image(node.cloud, name)
                self.catalog.forget(cloud=node.cloud, alias=name)
                raise
            seconds = round(time.monotonic() - began, 1)
            self.catalog.amend(
                cloud=node.cloud,
                alias=name,
                details={**details, "size_bytes": image.size_bytes, "seconds": seconds},
            )
            with transaction(self.engine, self.hub) as tx:
                tx.event(run_id, events.baked(name, value, image.size_bytes, seconds, packages))
            self.control.terminate(run_id, caller=SERVER)
        except StratusError as exc:
            log.warning("bake run %s failed: %s", run_id, exc)
            self.control.abort(run_id, f"bake: {exc.message}"[:4000])
        except Exception:
            log.exception("bake run %s failed", run_id)
            self.control.abort(run_id, "bake: the server failed to finish it (see its log)")
        finally:
            with self._lock:
                self._baking = {k: v for k, v in self._baking.items() if v != run_id}

    def _ready(self, run_id: str) -> bool:
        """Wait until the run has settled: True when it is Ready with its node done."""
        deadline = time.monotonic() + self.timeout_s + 60
        while time.monotonic() < deadline and not self._closing.is_set():
            seq = self.hub.seq
            if self.runs.settled(run_id):
                return not self.runs.ended(run_id)
            self.hub.wait_blocking(seq, topics=[self.runs.watch_topic(run_id)], timeout=1.0)
        return False

    @staticmethod
    def _installed(
        service: InstanceService, machine: str, packages: tuple[str, ...]
    ) -> dict[str, str]:
        names = bake_digest.package_names(packages)
        if not names:
            return {}
        answer = service.exec(machine, bake_clean.installed_command(names), timeout=60)
        return bake_digest.parse_installed(answer.stdout)

    # -- what deployments start from ------------------------------------------------------

    def choose(self, plan: Plan, owner: str) -> Plan:
        """``plan`` with every node whose component digest has a baked image of ``owner`` on
        its cloud starting from it (install steps out of its plan)."""
        service = self.instances_for(owner)
        listed: dict[str, dict[str, str]] = {}
        nodes = dict(plan.nodes)
        for name, node in plan.nodes.items():
            if not bake_digest.installs(node):
                continue
            if node.cloud not in listed:
                try:
                    listed[node.cloud] = self.images_of(service, node.cloud)
                except StratusError as exc:  # the run's own provisioning will say it
                    log.info("no baked images looked up on %s: %s", node.cloud, exc)
                    listed[node.cloud] = {}
            images = listed[node.cloud]
            if node.image not in images:
                continue
            value = bake_digest.digest(node, base_fingerprint=images[node.image])
            alias = bake_digest.alias(owner, value)
            if self._found(owner, node.cloud, alias, value, images) is not None:
                nodes[name] = bake_digest.from_baked(node, image=alias, value=value)
        return replace(plan, nodes=nodes)

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def images_of(service: InstanceService, cloud: str) -> dict[str, str]:
        """The images the owner may start on ``cloud``: name -> fingerprint (one listing)."""
        return {i.name: i.fingerprint for i in service.list_images(cloud)}

    def _found(
        self, owner: str, cloud: str, alias: str, value: str, images: Mapping[str, str]
    ) -> Owned | None:
        """``owner``'s baked image of digest ``value``, recorded and still on the backend (a
        record whose image was deleted behind our back is forgotten, so it is baked again)."""
        if alias not in images:
            self.catalog.forget(cloud=cloud, alias=alias)
            return None
        try:
            found = self.catalog.find(cloud=cloud, alias=alias, owner=owner)
        except NotFound:
            return None
        if found.owner != owner or found.origin != "bake" or found.details.get("digest") != value:
            return None
        return found


def public(image: Owned) -> dict[str, Any]:
    """A baked image as the API answers it."""
    return {
        "name": image.alias,
        "cloud": image.cloud,
        "fingerprint": image.fingerprint,
        "owner": image.owner,
        "created_at": image.created_at.isoformat(),
        **{k: image.details.get(k) for k in ("digest", "component", "version", "base")},
        "packages": dict(image.details.get("packages") or {}),
        "seconds": image.details.get("seconds"),
        "size_bytes": image.details.get("size_bytes"),
    }
