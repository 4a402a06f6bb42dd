"""`llamabatch run --ray`: a run's shares as Ray actors, sharing one named limiter actor.

The driver (this process) keeps what makes it one run, as with worker
processes: the output directory's lock, validation and the resume scan, the
manifest and the progress bar. Ray runs the rest: one `Limiter` actor, named
`llamabatch-limits-<run_id>`, holds every model's limits for the whole
cluster (it serves the coordinator protocol of engine/coordinator.py), and
each `ShareActor` runs the normal engine on its share of the prompts,
leasing permits from the limiter in blocks and writing its own journal and
part files into the run's directory: the same path on every node (shared
storage), or a URI on a `pyarrow.fs` filesystem (S3...), where each actor
journals into its node's staging directory and publishes a part at a time
(results/remote.py). An actor that dies costs its requests in flight: its
journal is turned into parts (by the driver, or with a URI by the actor that
takes its place on its node) and another starts, which skips every stored
row. With a URI, a run first publishes what earlier runs' actors left in
every node's staging directory (a killed driver's).

`ray` is an optional dependency (`pip install llamabatch[ray]`), imported
only here and only when `--ray` is given.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import resource
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import anyio

from llamabatch.config import RunConfig
from llamabatch.config.outputs import staging_dir
from llamabatch.engine import Observer
from llamabatch.engine.coordinator import LimitHub
from llamabatch.engine.lane import model_limits
from llamabatch.engine.monitor import peak_rss_mb
from llamabatch.errors import UsageError
from llamabatch.prompts import ScanReport
from llamabatch.results import DoneIndex, ResultWriter
from llamabatch.results.journal import JOURNAL_DIR, recover_writer
from llamabatch.results.parts import dedupe
from llamabatch.runs.gcsetting import tune_for_the_engine
from llamabatch.runs.rayjoin import join
from llamabatch.runs.share import ShareRun, WorkerSpec, worker_spec
from llamabatch.runs.workers import MAX_RESTARTS, deliver

log = logging.getLogger(__name__)
POLL_S: Final = 0.5  # how often the driver collects each actor's progress
EXIT_WAIT_S: Final = 30.0
LOCAL_SYSTEM_CONFIG: Final = {"enable_metrics_collection": False, "event_stats": False}


class Limiter:
    """The named limiter actor: the coordinator for every share of a run."""

    def __init__(self, config: RunConfig) -> None:
        self.hub = LimitHub([model_limits(m, config) for m in config.models])

    async def call(self, method: str, *args: Any) -> Any:
        return await self.hub.call(method, *args)

    async def figures(self) -> dict[str, Any]:
        """This actor's process: its CPU and peak memory so far."""
        return {"limiter": True, **_process_figures()}


class _ActorLink:
    """The coordinator protocol carried by Ray calls to the limiter actor."""

    def __init__(self, limiter: Any) -> None:
        self.limiter = limiter

    async def call(self, method: str, *args: Any) -> Any:
        return await self.limiter.call.remote(method, *args)


class ShareActor:
    """One share of a run, in a Ray actor."""

    def __init__(self, spec: WorkerSpec, limiter: Any, recover: str | None = None) -> None:
        logging.basicConfig(level=spec.log_level, format="%(levelname)s %(message)s")
        tune_for_the_engine()  # the actor's process is its own, as a worker process is
        self.share = ShareRun(spec, _ActorLink(limiter))
        self.recover = recover  # the writer id of a dead actor whose journal may be here

    async def run(self) -> dict[str, Any]:
        """Run the share; the figures of this actor's process (see `monitor.combine`)."""
        output_uri = self.share.spec.config.output_uri
        if self.recover is not None and output_uri is not None:
            # A staging journal is on the dead actor's machine: this one was placed there.
            recover = functools.partial(recover_writer, staging_dir(output_uri), self.recover)
            await anyio.to_thread.run_sync(recover)
        await self.share.run()
        figures = self.share.monitor.report(sent=self.share.progress.count)
        del figures["sources"]
        return {**figures, **_process_figures()}

    async def node(self) -> str:
        return str(require_ray().get_runtime_context().get_node_id())

    # Async like `run`: Ray calls them on the actor's event loop, where the engine lives.
    async def take_progress(self) -> list[list[Any]]:
        return self.share.progress.take()

    async def stop(self) -> None:
        self.share.stop()

    async def cancel(self) -> None:
        self.share.cancel()


class RayPool:
    """Runs a config's work as Ray actors (the engine's interface, like `WorkerPool`)."""

    def __init__(
        self,
        *,
        config: RunConfig,
        writer: ResultWriter,
        done: DoneIndex,
        scan: ScanReport,
        only: Callable[[str], bytearray | None],
        tally: Observer,
        keep_errors: bool,
        address: str | None,
        cache_endpoints: Mapping[str, str] | None = None,
    ) -> None:
        if config.cache is not None:  # actors need not share the driver's working directory
            config = replace(config, cache=replace(config.cache, path=config.cache.path.absolute()))
        self.config = config
        self.cache_endpoints = dict(cache_endpoints or {})
        self.writer = writer
        self.done = done
        self.scan = scan
        self.only = {m.name: only(m.name) for m in config.models}
        self.tally = tally
        self.keep_errors = keep_errors
        self.address = address
        self.stopping = anyio.Event()
        self.restarts = 0
        self.started_s = 0.0  # Ray's start-up (init, limiter), apart from the run
        self.swept = 0  # rows of earlier runs' journals published from the cluster's nodes
        self.clients: list[dict[str, Any]] = []  # each actor's figures (see monitor.combine)
        self._actors: dict[int, Any] = {}
        self._nodes: dict[int, str] = {}  # the node each share's actor runs on
        self._here: str | None = None  # with a response cache: this machine's node

    def stop(self) -> None:
        self.stopping.set()
        for actor in self._actors.values():
            actor.stop.remote()

    async def run(self) -> None:
        ray = require_ray()
        began = anyio.current_time()
        if not ray.is_initialized():
            await join(
                ray,
                self.address,
                include_dashboard=False,
                logging_level=logging.WARNING,
                # A local cluster of our own: no metrics or event-loop statistics to keep.
                local={"_system_config": LOCAL_SYSTEM_CONFIG},
            )
        limiter = None
        try:
            limiter = (
                ray.remote(num_cpus=0)(Limiter)
                .options(name=f"llamabatch-limits-{self.writer.run_id}")
                .remote(self.config)
            )
            if self.config.cache is not None:
                self._here = _one_machine(ray, self.config.cache.path, self.address)
            count = self.config.engine.workers
            if count <= 1:
                count = max(1, int(ray.cluster_resources().get("CPU", 1)))
            if self.config.output_uri is not None:
                self.swept = await _sweep(ray, self.config.output_uri, self.writer.run_id)
            self.started_s = anyio.current_time() - began
            async with anyio.create_task_group() as tg:
                for index in range(count):
                    tg.start_soon(self._keep, ray, limiter, index, count)
        finally:
            with anyio.CancelScope(shield=True):
                if self.restarts or self.done.errors or self.swept:
                    await anyio.to_thread.run_sync(dedupe, self.config.output)
                if limiter is not None:
                    self.clients.append(await _limiter_figures(ray, limiter))
                ray.shutdown()

    async def _keep(self, ray: Any, limiter: Any, index: int, count: int) -> None:
        dead: str | None = None
        for attempt in range(MAX_RESTARTS + 1):
            writer_id = f"{self.writer.run_id}_a{index}" + (f"r{attempt}" if attempt else "")
            error = await self._run_actor(ray, limiter, index, count, writer_id, dead)
            if error is None:
                return
            dead = writer_id
            with anyio.CancelScope(shield=True):
                kept = await anyio.to_thread.run_sync(recover_writer, self.config.output, writer_id)
            if self.stopping.is_set():
                return
            log.warning(
                "Ray actor %d died (%s); its %d journalled rows are kept%s",
                index,
                error,
                kept,
                "; starting another" if attempt < MAX_RESTARTS else "; giving up on its share",
            )
            self.restarts += 1
        self.stopping.set()

    async def _run_actor(
        self, ray: Any, limiter: Any, index: int, count: int, writer_id: str, dead: str | None
    ) -> str | None:
        """One actor from start to end; None when it finished, else why it did not.

        `dead`: the writer id of the share's actor that died, whose journal this one
        publishes first when the output is a URI (it is placed on the same node)."""
        spec = worker_spec(
            self.writer,
            self.config,
            self.scan,
            self.only,
            self.keep_errors,
            index=index,
            count=count,
            writer_id=writer_id,
            cache_endpoints=self.cache_endpoints,
        )
        options: dict[str, Any] = {"num_cpus": 1, "max_restarts": 0}
        if self._here is not None:  # the cache's file is here: so are the actors
            options["scheduling_strategy"] = _on_node(self._here, soft=False)
        elif dead is not None and index in self._nodes:
            options["scheduling_strategy"] = _on_node(self._nodes[index], soft=True)
        actor = ray.remote(**options)(ShareActor).remote(spec, limiter, dead)
        self._actors[index] = actor
        with contextlib.suppress(ray.exceptions.RayActorError):
            self._nodes[index] = await actor.node.remote()
        if self.stopping.is_set():
            actor.stop.remote()
        finished = actor.run.remote()
        # What a killed actor used is not known: null, not a guess.
        client: dict[str, Any] = {"actor": index, "writer_id": writer_id, "cpu_s": None}
        try:
            return await self._follow(ray, actor, finished, client)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True), anyio.move_on_after(EXIT_WAIT_S):
                actor.cancel.remote()
                await self._follow(ray, actor, finished, client)
            raise
        finally:
            del self._actors[index]
            ray.kill(actor)
            self.clients.append(client)

    async def _follow(
        self, ray: Any, actor: Any, finished: Any, client: dict[str, Any]
    ) -> str | None:
        """Relay the actor's progress until it ends; its figures go into `client`."""
        while True:
            ready, _ = ray.wait([finished], timeout=0)
            try:
                for message in await actor.take_progress.remote():
                    deliver(self.tally, message)
                if ready:
                    client.update(ray.get(finished))
                    return None
            except ray.exceptions.RayTaskError as exc:
                if isinstance(exc.cause, UsageError):  # the same on every node: no restart
                    raise UsageError(str(exc.cause)) from None
                return type(exc).__name__
            except ray.exceptions.RayActorError as exc:
                return type(exc).__name__
            await anyio.sleep(POLL_S)


def _one_machine(ray: Any, cache: Path, address: str | None) -> str:
    """This machine's node, when the cluster is this machine alone; else a UsageError (a
    response cache is one SQLite file, which processes of one machine only may share)."""
    here = str(ray.get_runtime_context().get_node_id())
    nodes = [node["NodeID"] for node in ray.nodes() if node.get("Alive")]
    remote = (address or os.environ.get("RAY_ADDRESS", "")).startswith("ray://")
    if nodes != [here] or remote:
        raise UsageError(
            f"--ray with a response cache ({cache}) needs a Ray cluster of this machine alone "
            f"(this one has {len(nodes)} nodes{', joined as a Ray client' if remote else ''}): "
            "a SQLite file cannot be shared across machines; drop the cache, or use --workers"
        )
    return here


async def _limiter_figures(ray: Any, limiter: Any) -> dict[str, Any]:
    """The limiter actor's figures; its CPU is null if it cannot answer (gone)."""
    with anyio.move_on_after(EXIT_WAIT_S):
        try:
            figures: dict[str, Any] = await limiter.figures.remote()
            return figures
        except ray.exceptions.RayError:
            pass
    return {"limiter": True, "cpu_s": None}


async def _sweep(ray: Any, uri: str, run_id: str) -> int:
    """Publish the journals that earlier runs' actors left in the staging directories of
    every node (a killed driver's actors); returns the rows published."""
    alive = [node["NodeID"] for node in ray.nodes() if node.get("Alive")]
    task = ray.remote(num_cpus=0)(_publish_journals)
    calls = [
        task.options(scheduling_strategy=_on_node(node, soft=False)).remote(uri, run_id)
        for node in alive
    ]
    published = 0
    for call in calls:  # submitted together above; they run at once
        published += await call
    return published


def _publish_journals(uri: str, run_id: str) -> int:
    """This node's journals of `uri` written by runs other than `run_id`, turned into parts."""
    journal = staging_dir(uri) / JOURNAL_DIR
    writers = {p.stem for p in journal.glob("*.schema") if not p.stem.startswith(run_id)}
    return sum(recover_writer(staging_dir(uri), writer) for writer in sorted(writers))


def _on_node(node: str, *, soft: bool) -> Any:
    strategies = importlib.import_module("ray.util.scheduling_strategies")
    return strategies.NodeAffinitySchedulingStrategy(node_id=node, soft=soft)


def _process_figures() -> dict[str, Any]:
    """This process's CPU (user + system, since it started: an actor's process is its own)
    and peak memory."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "max_rss_mb": round(peak_rss_mb(), 1),
    }


def require_ray() -> Any:
    """The `ray` module, or a usage error saying how to install it."""
    try:
        # By name: an optional dependency that type checks need not have installed.
        ray = importlib.import_module("ray")
    except ImportError:
        raise UsageError(
            "--ray needs Ray: pip install 'llamabatch[ray]' (on every node of the cluster)"
        ) from None
    return ray
