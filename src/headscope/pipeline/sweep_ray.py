"""Run a sweep's entries as Ray tasks (``headscope sweep --executor ray``).

Each entry becomes one Ray task that loads its model, fingerprints and scans it, and returns
its record (a small dict of numbers, the same one the local executor makes). The task asks
Ray for ``gpus_per_task`` GPUs (default 1) when the sweep runs on CUDA and for
``cpus_per_task`` CPUs (default 1) always; Ray places it on a node that has them and hands
it those GPUs through ``CUDA_VISIBLE_DEVICES``. The driver, this process, receives records
as they finish (``ray.wait``) and writes every file itself: the entry's JSON, the table after
each entry, the figure at the end (see :func:`headscope.pipeline.sweep.run_sweep`). So results land
on the machine that ran ``headscope sweep``, and workers need no shared output directory.

What workers need: headscope and its dependencies installed (the same version as here), and
the models: hub ids are fetched on each node (or read from its Hugging Face cache); local
directories must exist at the same path on every node (a shared filesystem).

Ray is imported only here, and only when this executor runs: the local executor needs no Ray.

>>> from headscope.pipeline.sweep import plan_sweep, run_sweep
>>> from headscope.pipeline.sweep_ray import RayExecutor
>>> entries = plan_sweep(["EleutherAI/pythia-70m"], ["step1000", "step3000"])      # doctest: +SKIP
>>> run_sweep(entries, "out", executor=RayExecutor("auto"), seq_len=50)          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator

from ..errors import BadInput, HeadscopeError
from .sweep import EntryJob, Event, Outcome, entry_failure

INSTALL_HINT = 'pip install "headscope[ray]"  (Ray 2.9 or newer; on a cluster, install it on every node)'
#: Seconds to wait for a cluster's head to answer before giving up (Ray itself waits ~2 minutes).
CONNECT_TIMEOUT_S = 5.0


def import_ray():
    """The ``ray`` module, or :class:`BadInput` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise BadInput(
            "--executor ray needs Ray, which is not installed in this environment", hint=INSTALL_HINT
        ) from None
    return ray


# --- reaching a cluster ------------------------------------------------------------------------
def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``ray://host:port`` -> (host, port); :class:`BadInput` for anything else.

    >>> split_address("ray://10.0.0.5:10001"), split_address("head:6379")
    (('10.0.0.5', 10001), ('head', 6379))
    """
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(
            f"--address {address!r} is not a Ray cluster address",
            hint="use auto (the cluster started with `ray start` on this machine), HOST:PORT of "
            "the head node (port 6379 unless changed) or ray://HOST:PORT (Ray Client, port 10001)",
        )
    return host.strip("[]"), int(port)


# An HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS, the Ray Client
# server) answers with a SETTINGS frame of its own (frame type 0x4 in the fourth byte).
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def probe_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail within ``timeout`` seconds unless ``address`` answers like a Ray head (a gRPC server).

    Ray's own ``ray.init(address=...)`` retries for about two minutes against an address
    where nothing answers (and longer against a port that accepts but is not Ray); a sweep
    should say at once that the address is wrong. Checks that a TCP connection opens and
    that the server speaks HTTP/2, as Ray's GCS and Ray Client servers do; it cannot tell a
    Ray head from another gRPC server (``ray.init`` does that next).
    """
    host, port = split_address(address)
    where = f"{host}:{port}"
    hint = (
        "check the address (`ray status` on the head prints it), that the cluster is running, and that "
        "this machine can reach the port (firewall, VPN, SSH tunnel)"
    )
    t0 = time.perf_counter()
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as exc:
        raise BadInput(f"--address {address}: unknown host {host!r} ({exc.strerror or exc})", hint=hint) from None
    except OSError as exc:
        raise BadInput(
            f"no Ray cluster answers at {where}: {exc.strerror or exc} (after {time.perf_counter() - t0:.1f} s)",
            hint=hint,
        ) from None
    with sock:
        try:
            sock.settimeout(max(0.1, timeout - (time.perf_counter() - t0)))
            sock.sendall(_H2_PREFACE)
            head = sock.recv(9)
            # a GCS address (not Ray Client's ray://) must also answer Ray's own GetClusterId call: an
            # HTTP/2 or gRPC server that is not Ray refuses it, where ray.init would retry for ~20 s
            ray_gcs = not address.startswith("ray://") and len(head) >= 4 and head[3] == 0x04
            answered = _answers_get_cluster_id(sock, where, int.from_bytes(head[:3], "big")) if ray_gcs else None
        except OSError:
            head, answered = b"", None
    if len(head) < 4 or head[3] != 0x04:
        raise BadInput(
            f"something listens at {where}, but it does not answer like a Ray cluster's head "
            f"(no gRPC reply within {timeout:.0f} s)",
            hint="the head's GCS port is 6379 unless `ray start --port` changed it; Ray Client "
            "addresses start with ray:// (port 10001)",
        )
    if answered is False:
        raise BadInput(
            f"something listens at {where} and speaks HTTP/2, but it is not a Ray cluster's head "
            "(it does not answer Ray's GetClusterId call)",
            hint="the head's GCS port is 6379 unless `ray start --port` changed it (`ray status` on the head "
            "prints the address); Ray Client addresses start with ray:// (port 10001)",
        )


def _hpack_literal(name: str, value: str) -> bytes:
    """One HPACK header field, literal without indexing, new name, no Huffman (RFC 7541 6.2.2); short strings only."""
    n, v = name.encode(), value.encode()
    assert len(n) < 127 and len(v) < 127
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _answers_get_cluster_id(sock: socket.socket, where: str, unread: int) -> bool:
    """Call ``ray.rpc.NodeInfoGcsService/GetClusterId`` (Ray's GCS, Ray >= 2.7) by hand over HTTP/2.

    ``unread``: bytes of the server's first SETTINGS frame still to read. True when the server
    answers as Ray's GCS does: a reply message (a DATA frame), or gRPC trailers whose status is not
    UNIMPLEMENTED (a cluster with token authentication answers UNAUTHENTICATED). False when it is
    not that service: ``grpc-status: 12`` (a gRPC server without the method), an HTTP/2 answer
    that is not gRPC (a web server's 404), a reset stream, GOAWAY or a closed connection.
    """
    headers = b"".join(
        _hpack_literal(k, v)
        for k, v in (
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/ray.rpc.NodeInfoGcsService/GetClusterId"),
            (":authority", where),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        )
    )
    sock.sendall(
        _frame(0x4, 0x1, 0, b"")  # SETTINGS ACK
        + _frame(0x1, 0x4, 1, headers)  # HEADERS, END_HEADERS
        + _frame(0x0, 0x1, 1, b"\x00\x00\x00\x00\x00")  # DATA, END_STREAM: an empty GetClusterIdRequest
    )
    buf = b""

    def need(n: int) -> bool:
        nonlocal buf
        while len(buf) < n:
            chunk = sock.recv(65536)
            if not chunk:
                return False
            buf += chunk
        return True

    if not need(unread):
        return False
    buf = buf[unread:]
    block = b""
    while True:
        if not need(9):
            return False
        length, kind, flags = int.from_bytes(buf[:3], "big"), buf[3], buf[4]
        stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
        if not need(9 + length):
            return False
        payload, buf = buf[9 : 9 + length], buf[9 + length :]
        if kind == 0x0 and stream == 1 and length > 5:  # DATA with a gRPC message that is not empty
            return True
        if kind == 0x7 or (kind == 0x3 and stream == 1):  # GOAWAY, RST_STREAM
            return False
        if kind in (0x1, 0x9) and stream == 1:  # HEADERS, CONTINUATION
            block += payload
            if kind == 0x1 and flags & 0x1:  # the call ended with no message: read its trailers
                return _grpc_but_not_unimplemented(block)


def _grpc_but_not_unimplemented(block: bytes) -> bool:
    # grpc-core (Ray's gRPC) writes these header values as plain literals; a status we cannot read
    # on a gRPC answer counts as Ray rather than refusing a real cluster.
    at = block.find(b"grpc-status")
    if at >= 0:
        n = block[at + 11] & 0x7F if at + 11 < len(block) else 0
        return block[at + 12 : at + 12 + n] != b"12"
    return b"grpc" in block


# --- the executor -------------------------------------------------------------------------------
class RayExecutor:
    """Runs each entry of a sweep as a Ray task; pass it to :func:`headscope.pipeline.sweep.run_sweep`.

    ``address``: None (default) starts a local Ray cluster on this machine for the sweep and
    stops it afterwards (``local_cpus`` CPUs; default all); ``"auto"`` joins the cluster
    started with ``ray start`` on this machine (or the one in ``RAY_ADDRESS``);
    ``"HOST:PORT"`` joins the cluster whose head is there; ``"ray://HOST:PORT"`` goes through
    Ray Client (``pip install "ray[client]"``). If this process is already connected to Ray
    (``ray.is_initialized()``), that connection is used (and kept) when ``address`` is None,
    ``"auto"`` or names the same cluster.

    Each task asks for ``cpus_per_task`` CPUs and, when the sweep runs on CUDA (``device``
    ``cuda``, or ``auto`` on a cluster that has GPUs), ``gpus_per_task`` GPUs (fractions pack
    small models onto one GPU; with ``device_map`` more than 1 spreads one model over
    several). CPU tasks run torch with ``int(cpus_per_task)`` threads. ``max_retries`` is how
    often Ray reruns a task whose worker died (default 0: the entry is recorded as failed
    and the next run of the sweep retries it, as with the local executor). ``runtime_env``
    goes to ``ray.init`` (e.g. ``{"env_vars": {...}}``). ``entry_fn(job) -> record`` is what
    a task runs (default ``job.run()``); a test may replace it.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        cpus_per_task: float = 1.0,
        gpus_per_task: float = 1.0,
        max_retries: int = 0,
        local_cpus: int | None = None,
        runtime_env: dict | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        log: Callable[[str], None] | None = None,
        entry_fn: Callable[[EntryJob], dict] | None = None,
    ):
        if cpus_per_task <= 0 or gpus_per_task <= 0:
            raise BadInput(
                "--cpus-per-task and --gpus-per-task must be positive",
                hint="e.g. --cpus-per-task 4, --gpus-per-task 0.5",
            )
        address = (address or "").strip() or None
        if address not in (None, "auto", "local"):
            split_address(address)  # a malformed address is refused before anything else
        self.address = None if address == "local" else address
        self.cpus_per_task, self.gpus_per_task = float(cpus_per_task), float(gpus_per_task)
        self.max_retries, self.local_cpus, self.runtime_env = int(max_retries), local_cpus, runtime_env
        self.connect_timeout = connect_timeout
        self.log = log or (lambda msg: None)
        self.entry_fn = entry_fn

    def check(self) -> None:
        """Fail now, in seconds, if Ray is missing or ``address`` does not answer (``run`` checks again)."""
        import_ray()
        if self.address not in (None, "auto"):
            probe_address(self.address, self.connect_timeout)

    # -- the executor protocol (see headscope.pipeline.sweep.LocalExecutor) --
    def run(self, jobs: list[EntryJob], emit: Event) -> Iterator[Outcome]:
        """Connect, check the request fits a node, submit every job; returns the generator of outcomes.

        Everything that can be wrong with the cluster raises here, before the driver writes a file.
        """
        if not jobs:
            return iter_nothing()
        ray = import_ray()
        started = self._connect(ray)
        try:
            device, gpus = self._placement(ray, jobs[0].device, jobs[0].device_map)
            threads = 0 if gpus else max(1, int(self.cpus_per_task))
            # Resources in the decorator: with num_gpus > 0 Ray then gives each task a fresh worker
            # process (max_calls=1), so nothing of one model stays on the GPU for the next.
            task = ray.remote(num_cpus=self.cpus_per_task, num_gpus=gpus, max_retries=self.max_retries)(_run_in_worker)
            refs = {}
            for job in jobs:
                ref = task.options(name=f"headscope-sweep:{job.entry.label}").remote(
                    dataclasses.replace(job, device=device), self.entry_fn, threads
                )
                refs[ref] = job
        except BaseException:
            if started:
                ray.shutdown()
            raise
        self.log(
            f"Ray: {len(jobs)} {'entry' if len(jobs) == 1 else 'entries'} submitted to {self._where(ray, started)}; each task asks for "
            f"{_amount(self.cpus_per_task, 'CPU')}"
            + (f" and {_amount(gpus, 'GPU')}" if gpus else "")
            + f" and runs on {device}"
        )
        return self._collect(ray, refs, started)

    def _collect(self, ray, refs: dict, started: bool) -> Iterator[Outcome]:
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    job = refs[ref]
                    try:
                        out = ray.get(ref)
                    except Exception as exc:  # the task never returned: its worker or node died, or was cancelled
                        yield job, None, _lost_task(job, exc)
                    else:
                        yield (job, out["record"], None) if "record" in out else (job, None, out["failure"])
        finally:
            # Ctrl-C or close(): stop what is still queued or running; finished entries are written.
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # pragma: no cover - a task that just ended cannot be cancelled
                    pass
            if started:
                ray.shutdown()

    # -- connecting --
    def _connect(self, ray) -> bool:
        """Connect to (or start) the cluster; True when this call started Ray and must shut it down."""
        addr = self.address
        if addr == "auto":
            addr = _resolve_auto(ray)
        if addr not in (None, "auto"):
            probe_address(addr, self.connect_timeout)
        if ray.is_initialized():
            here = _gcs_address(ray)
            if addr is not None and not addr.startswith("ray://") and here and _same_place(addr, here) is False:
                raise BadInput(
                    f"this process is already connected to the Ray cluster at {here}, not {addr}",
                    hint="call ray.shutdown() first, or leave address unset to use that cluster",
                )
            return False
        kwargs = {
            "log_to_driver": False,  # worker output would land in --json stdout; failures carry tracebacks
            "logging_level": logging.WARNING,
            "runtime_env": self.runtime_env,
        }
        try:
            if addr is None:
                ray.init(address="local", num_cpus=self.local_cpus, include_dashboard=False, **kwargs)
            else:
                ray.init(address=addr, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            client = addr is not None and addr.startswith("ray://") and "ray[client]" in str(exc)
            if client:
                hint = 'Ray Client addresses (ray://) need pip install "ray[client]"'
            elif addr is None:
                hint = "see the Ray logs under /tmp/ray/session_latest/logs, or start a cluster with `ray start --head`"
            else:
                hint = (
                    "the Ray version here must match the cluster's (`ray status` on the head); a cluster with token "
                    "authentication (newer Ray's default) needs RAY_AUTH_MODE=token here and its token in "
                    "RAY_AUTH_TOKEN or ~/.ray/auth_token"
                )
            where = "start a local Ray cluster" if addr is None else f"connect to Ray at {addr}"
            raise BadInput(f"could not {where}: {first}", hint=hint) from None
        return True

    def _where(self, ray, started: bool) -> str:
        res = ray.cluster_resources()
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        kind = "a local Ray cluster" if started and self.address is None else f"the Ray cluster at {_gcs_address(ray)}"
        return (
            f"{kind} ({nodes} node{'s' if nodes != 1 else ''}, {_amount(res.get('CPU', 0), 'CPU')}, "
            f"{_amount(res.get('GPU', 0), 'GPU')})"
        )

    def _placement(self, ray, device: str, device_map) -> tuple[str, float]:
        """(device the worker loads on, GPUs each task asks for); refuses what no node can give."""
        dev = str(device or "auto").lower()
        cluster_gpus = ray.cluster_resources().get("GPU", 0)
        if dev.startswith("cuda:"):
            raise BadInput(
                f"--device {device} names one GPU, but with --executor ray each task gets its own",
                hint="use --device cuda (or auto): Ray hands each task a GPU of its node",
            )
        if dev == "auto":
            dev = "cuda" if cluster_gpus else "cpu"
        if dev == "cuda" and not cluster_gpus:
            raise BadInput(
                "--device cuda was asked for, but the Ray cluster has no GPUs",
                hint="use --device cpu (or auto), or start the cluster's nodes with their GPUs "
                "(`ray start --num-gpus N`)",
            )
        on_gpu = dev == "cuda" or (device_map is not None and cluster_gpus > 0)
        gpus = self.gpus_per_task if on_gpu else 0.0
        fits = [
            n
            for n in ray.nodes()
            if n.get("Alive")
            and n["Resources"].get("CPU", 0) >= self.cpus_per_task
            and n["Resources"].get("GPU", 0) >= gpus
        ]
        if not fits:
            sizes = (
                "; ".join(
                    f"{_amount(n['Resources'].get('CPU', 0), 'CPU')}, {_amount(n['Resources'].get('GPU', 0), 'GPU')}"
                    for n in ray.nodes()
                    if n.get("Alive")
                )
                or "no live nodes"
            )
            raise BadInput(
                f"no node of the Ray cluster can run a task that asks for "
                f"{_amount(self.cpus_per_task, 'CPU')}"
                + (f" and {_amount(gpus, 'GPU')}" if gpus else "")
                + f" (nodes: {sizes}); Ray would wait for one forever",
                hint="lower --cpus-per-task / --gpus-per-task, or add a node that has them",
            )
        return dev, gpus


def iter_nothing() -> Iterator[Outcome]:
    """An executor's answer to no jobs: a generator that yields nothing (and can be closed)."""
    yield from ()


def _run_in_worker(job: EntryJob, entry_fn, threads: int) -> dict:
    """The Ray task: ``{"record": ...}`` or ``{"failure": ...}`` (an entry's error is a result, not a crash)."""
    import resource

    import torch

    if threads:
        # Ray sets OMP_NUM_THREADS per task, but a reused worker keeps the thread count torch read at import
        torch.set_num_threads(threads)
    cuda = str(job.device).startswith("cuda") and torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        record = entry_fn(job) if entry_fn is not None else job.run()
    except Exception as exc:  # the entry's own failure (a model that will not load...): keep its message and hint
        return {"failure": entry_failure(job.entry, exc)}
    # where it ran and what it took: peak RSS is the worker process's since it started (Linux: KiB)
    record["worker"] = {
        "executor": "ray",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device": job.device,
        "threads": torch.get_num_threads(),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    }
    if cuda:
        record["worker"]["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return {"record": record}


def _lost_task(job: EntryJob, exc: BaseException) -> dict:
    """A failure record for a task that raised inside Ray itself (worker died, node lost, cancelled)."""
    name = type(exc).__name__
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    if "OutOfMemory" in name:
        msg, hint = (
            f"Ray stopped the task: its node ran out of memory ({first})",
            "run fewer tasks per node (raise --cpus-per-task), or lower --max-memory / --batch",
        )
    elif "Cancelled" in name:
        msg, hint = "the task was cancelled", "run the same command again to run it"
    elif "WorkerCrashed" in name or "ActorDied" in name or "NodeDied" in name:
        msg, hint = (
            f"the Ray worker running this entry died before it returned ({name})",
            (
                "a worker dies when the system kills it (out of memory) or its node goes away; the "
                "worker's log is under /tmp/ray/session_latest/logs on its node. Run the same command "
                "again to retry the entry"
            ),
        )
    else:
        msg, hint = (
            f"the Ray task failed: {name}: {first}",
            "if a worker cannot import headscope, install it (same version) on every node",
        )
    return entry_failure(job.entry, HeadscopeError(msg, hint), tb=str(exc))


# --- small helpers ----------------------------------------------------------------------------
def _resolve_auto(ray) -> str | None:
    """The address ``auto`` stands for (RAY_ADDRESS, or the cluster ``ray start`` made here)."""
    if ray.is_initialized():
        return None
    try:
        from ray._private.services import canonicalize_bootstrap_address  # Ray's own lookup (not public API)
    except ImportError:  # pragma: no cover - a Ray that moved it: let ray.init find it, without the probe
        return "auto"
    try:
        found = canonicalize_bootstrap_address("auto")
    except ConnectionError:
        raise BadInput(
            "--address auto: no Ray cluster is running on this machine and RAY_ADDRESS is not set",
            hint="start one with `ray start --head`, give the head's HOST:PORT, or leave --address out "
            "to start a local cluster for this sweep",
        ) from None
    return found or "auto"


def _gcs_address(ray) -> str | None:
    try:
        return ray.get_runtime_context().gcs_address
    except Exception:  # pragma: no cover - Ray Client contexts may not know it
        return None


def _same_place(a: str, b: str) -> bool | None:
    """Whether two host:port addresses name the same endpoint (None when a host does not resolve)."""
    try:
        (ha, pa), (hb, pb) = split_address(a), split_address(b)
        return pa == pb and socket.gethostbyname(ha) == socket.gethostbyname(hb)
    except (BadInput, OSError):
        return None


def _amount(n: float, what: str) -> str:
    n = float(n)
    text = str(int(n)) if n.is_integer() else f"{n:g}"
    return f"{text} {what}{'' if n == 1 else 's'}"
