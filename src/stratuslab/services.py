"""The composition root: every service the server holds, built once and wired in their
constructors.

The API, the CLI's in-process mode and the tests get their services from :func:`build`; nothing
else constructs the engine's parts. What depends on what, read top to bottom:

    store, hub, connector pool, worker pool
    cloud registry (connector pool)   the site's clouds, as administrators register them
    accounts, credentials, authentication   who is calling
    quotas (reservations), accounting       what users may hold, and what they used
    image policy (endorsements)      the site's trust policy, at every start
    instances (per owner, quotas, policy)    the cloud layer
    volumes (per owner, instances, quotas)   persistent volumes
    marketplace                      endorsed image entries, read by anybody
    work queue, parameter values     the seams between the engine's parts
    modules, runs (quotas), tokens, logs, reports
    run control     (values, work)   the state machine
    parameters      (values, control)
    scaling         (control, parameters, quotas)
    orchestrator    (runs, control, tokens, instances)
    bakes           (modules, runs, control, instances)   baked images; runs ask it
    supervisor      (control, orchestrator, work)
    watches, outbox, verifier (modules, runs, control)   continuous verification
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine

from stratuslab.accounts.authn import Authenticator
from stratuslab.accounts.certificates import Certificates
from stratuslab.accounts.credentials import Credentials
from stratuslab.accounts.throttle import LoginThrottle
from stratuslab.accounts.users import Accounts
from stratuslab.cloud import events, sitecert
from stratuslab.cloud.clouds import ConnectorPool
from stratuslab.cloud.imaging import ImageService
from stratuslab.cloud.importer import Importer
from stratuslab.cloud.instances import InstanceService
from stratuslab.cloud.marketplace.gate import EndorsementSource, ImagePolicy
from stratuslab.cloud.marketplace.policy import Decision
from stratuslab.cloud.marketplace.store import ImportBook, Marketplace
from stratuslab.cloud.placement import Ask, Placed
from stratuslab.cloud.quotas import Quotas
from stratuslab.cloud.registry import CloudRegistry
from stratuslab.cloud.snapshots import Snapshots
from stratuslab.cloud.usage import Accounting
from stratuslab.cloud.volumes import VolumeService
from stratuslab.config import Settings
from stratuslab.deploy.bake import Bakery
from stratuslab.deploy.claims import Claims
from stratuslab.deploy.control import RunControl
from stratuslab.deploy.junit import JUnitReports
from stratuslab.deploy.logs import RunLogs
from stratuslab.deploy.modules import ModuleStore
from stratuslab.deploy.orchestrator import Orchestrator, OrchestratorConfig
from stratuslab.deploy.params import Parameters, ParameterValues
from stratuslab.deploy.reports import ReportStore
from stratuslab.deploy.reservations import held_by_runs, pending_by_cloud
from stratuslab.deploy.run_volumes import RunVolumes
from stratuslab.deploy.runs import RunService
from stratuslab.deploy.scaling import Scaling
from stratuslab.deploy.secrets import RunSecrets
from stratuslab.deploy.silence import Silence
from stratuslab.deploy.supervisor import Supervisor
from stratuslab.deploy.tokens import NodeTokens
from stratuslab.deploy.work import WorkQueue
from stratuslab.errors import Forbidden, StratusError
from stratuslab.hub import Hub
from stratuslab.hub_pg import hub_for
from stratuslab.principal import Principal
from stratuslab.verify import addresses
from stratuslab.verify import gitcache as verify_git
from stratuslab.verify.notify.mail import SmtpSettings
from stratuslab.verify.notify.outbox import Outbox
from stratuslab.verify.notify.status import check_forge
from stratuslab.verify.parts import Parts
from stratuslab.verify.public import PublicViews
from stratuslab.verify.verifier import Verifier
from stratuslab.verify.watches import Watches

WORKERS = 64  # background jobs at once: provisioning and teardown threads of every run


class Services:
    """Everything the server holds for its lifetime."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        token: str,
        endorsements: EndorsementSource | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.token = token
        self.marketplace = Marketplace(engine, max_entries=settings.marketplace_max_entries)
        # The site's trust policy, for every instance start and every run's nodes; the
        # endorsements are the Marketplace's (a test may hand others).
        self.image_policy = ImagePolicy.from_settings(
            settings, source=self.marketplace if endorsements is None else endorsements
        )
        # Across processes on PostgreSQL (LISTEN/NOTIFY), in this process on SQLite.
        self.hub: Hub = hub_for(engine)
        self.connectors = ConnectorPool(engine)
        self.clouds = CloudRegistry(engine, self.connectors, pending=pending_by_cloud)
        self.executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="work")
        self._active = 0
        self._lock = threading.Lock()

        self.accounts = Accounts(engine)
        self.credentials = Credentials(engine)
        self.certificates = Certificates(engine)
        self.authn = Authenticator(
            accounts=self.accounts,
            credentials=self.credentials,
            throttle=LoginThrottle(engine),
            certificates=self.certificates,
            site_token=token,
            site_user=settings.user,
            allow_proxies=settings.tls_allow_proxies,
        )
        self.quotas = Quotas(engine, reserved=held_by_runs)  # what runs hold counts too
        self.accounting = Accounting(engine)
        self.work = WorkQueue()
        # What is redacted from what nodes send people; a secret set through another process
        # sharing the store makes this one read the run's set again.
        secrets = RunSecrets(engine, sync=self.hub.sync)
        self.hub.on_remote("secret:", lambda topic, _: secrets.forget(topic.partition(":")[2]))
        self.claims = Claims(engine, lease=timedelta(seconds=settings.claim_lease_s))
        values = ParameterValues(secrets)
        self.modules = ModuleStore(engine)
        self.runs = RunService(
            engine,
            self.hub,
            modules=self.modules,
            work=self.work,
            secrets=secrets,
            max_instances=settings.max_run_instances,
            quotas=self.quotas,
            decide_image=self.decide_image,
            baked_images=lambda plan, owner: self.bakes.choose(plan, owner),
            bind_volumes=lambda plan, owner: self.run_volumes.bind(plan, owner),
            place=self._place,
        )
        self.tokens = NodeTokens(engine)
        self.logs = RunLogs(engine, self.hub, secrets=secrets)
        self.reports = ReportStore(engine, self.hub, folder=settings.reports_dir)
        self.junit = JUnitReports(runs=self.runs, logs=self.logs, reports=self.reports)
        self.control = RunControl(
            engine, self.hub, values=values, work=self.work, report_grace=settings.report_grace_s
        )
        self.params = Parameters(engine, self.hub, values=values, aborts=self.control)
        self.scaling = Scaling(
            self.control,
            self.params,
            max_instances=settings.max_run_instances,
            quotas=self.quotas,
            place=self._place,
        )
        self.run_volumes = RunVolumes(self.volumes_of)  # a run's volumes, as its owner's
        self.orchestrator = Orchestrator(
            engine,
            runs=self.runs,
            control=self.control,
            tokens=self.tokens,
            claims=self.claims,
            instances_for=self.instances_of,
            submit=self.submit,
            config=OrchestratorConfig(
                agent_url=settings.agent_url,
                agent_ca=sitecert.ca_source(settings),
                name_prefix=settings.instance_prefix,
            ),
            volumes=self.run_volumes,
        )
        self.bakes = Bakery(
            engine,
            self.hub,
            modules=self.modules,
            runs=self.runs,
            control=self.control,
            instances_for=self.instances_of,
            submit=self.submit,
        )
        self.supervisor = Supervisor(
            engine,
            control=self.control,
            orchestrator=self.orchestrator,
            work=self.work,
            instances_for=self.instances_of,
            silence=Silence(after=settings.cloud_silence_s),
        )
        self.watches = Watches(
            engine,
            check_url=lambda url, local: verify_git.check_url(url, local_allowed=local),
            check_forge=check_forge,
            min_every_s=settings.watch_min_every_s,
            private_addresses=settings.watch_private_addresses,
        )
        self.watch_views = PublicViews(engine)
        self.outbox = Outbox(engine, SmtpSettings.from_settings(settings))
        self.verifier = Verifier(
            Parts(
                engine=engine,
                repositories=verify_git.Repositories(settings.git_cache_dir),
                modules=self.modules,
                runs=self.runs,
                control=self.control,
                principal_of=self._principal_of,
                submit=self.submit,
                links_url=settings.links_url,
                outbox=self.outbox,
            )
        )

    def _principal_of(self, owner: str) -> Principal | None:
        """A watch's owner as the caller of the runs it makes (their groups, their rights);
        the site token's user, who may have no account, is the site's administrator."""
        found = self.accounts.principal(owner)
        if found is None and owner == self.settings.user:
            return Principal.for_user(owner, admin=True)
        return found

    def instances(self, caller: Principal) -> InstanceService:
        """The instance service acting for ``caller``: their own instances, or every owner's
        for an administrator. A node instance's token reaches none."""
        if caller.is_node or not (caller.user or caller.server):
            raise Forbidden(f"{caller} may not manage instances")
        return self._instances(caller.user or "", sees_all=caller.sees_all)

    def images(self, caller: Principal) -> ImageService:
        """Saving instances as images and deleting images, for ``caller``."""
        return ImageService(
            self.engine,
            owner=caller.user or "",
            admin=caller.sees_all,
            instances=self.instances(caller),
            connectors=self.connectors,
        )

    def importer(self, caller: Principal) -> Importer:
        """Importing images from elsewhere, for ``caller``."""
        return Importer(
            self.images(caller),
            folder=self.settings.imports_dir,
            max_bytes=self.settings.image_import_max_bytes,
            private_allowed=self.settings.image_import_private_addresses,
            is_private=addresses.is_private,
            entries=ImportBook(self.marketplace, caller),
        )

    def snapshots(self, caller: Principal) -> Snapshots:
        return Snapshots(self.instances(caller), self.connectors, limit=self.settings.max_snapshots)

    def volumes(self, caller: Principal) -> VolumeService:
        """The volume service acting for ``caller``: their own volumes and everybody's public
        ones, or every volume for an administrator; instances as :meth:`instances` reaches."""
        return self._volumes(caller.user or "", self.instances(caller), sees_all=caller.sees_all)

    def volumes_of(self, owner: str) -> VolumeService:
        """The volume service the engine uses on a run's behalf: with ``owner``'s rights over
        volumes (a run binds only what its owner may), reaching the run's instances."""
        return self._volumes(owner, self.instances_of(owner), sees_all=False)

    def _volumes(self, owner: str, instances: InstanceService, *, sees_all: bool) -> VolumeService:
        return VolumeService(
            self.engine,
            owner=owner,
            connectors=self.connectors,
            instances=instances,
            quotas=self.quotas,
            sees_all=sees_all,
            max_snapshots=self.settings.max_snapshots,
        )

    def instances_of(self, owner: str) -> InstanceService:
        """The instance service the engine uses on a run's behalf: it creates ``owner``'s
        instances and reaches every one (the server's own work)."""
        return self._instances(owner, sees_all=True)

    def decide_image(self, cloud: str, image: str) -> Decision:
        """The site's decision on ``image`` of ``cloud`` (``NotFound`` when it has none)."""
        return self.instances_of(self.settings.user).decide_image(image, cloud=cloud)[1]

    def _place(self, owner: str, asks: Sequence[Ask]) -> list[Placed | StratusError]:
        """Where a run's node instances go, as their owner's (deploy/placing.py)."""
        return self.instances_of(owner).place(asks)

    def _instances(self, owner: str, *, sees_all: bool) -> InstanceService:
        return InstanceService(
            self.engine,
            owner=owner,
            connectors=self.connectors,
            name_prefix=self.settings.instance_prefix,
            on_event=events.publisher(self.hub),  # /api/instances/watch hears every change
            sees_all=sees_all,
            quotas=self.quotas,
            policy=self.image_policy,
            pending=pending_by_cloud,  # what a cloud's cap counts beside its instances
        )

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Background work; the server does not exit for idleness while some is left."""
        with self._lock:
            self._active += 1
        future = self.executor.submit(fn, *args)
        future.add_done_callback(self._finished)
        return future

    def busy(self) -> bool:
        """Background work left (the orchestrator's jobs among it), or runs that need us."""
        with self._lock:
            if self._active > 0:
                return True
        return self.runs.working() or self.verifier.active()

    def start(self) -> None:
        """Start watching over runs (timeouts, dead nodes, work left by a previous server)."""
        self.claims.start()  # the heartbeat first: claims are judged by it
        self.bakes.resume()
        self.supervisor.start()
        self.verifier.start()

    def close(self) -> None:
        self.bakes.close()
        self.verifier.stop()
        self.supervisor.stop()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.clouds.close()
        self.claims.stop()
        self.hub.close()
        self.connectors.close()

    def _finished(self, _future: Future[Any]) -> None:
        with self._lock:
            self._active -= 1


def build(settings: Settings, *, token: str) -> Services:
    from stratuslab.db.session import engine_for

    return Services(settings, engine_for(settings.database_url), token=token)
