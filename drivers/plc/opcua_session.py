"""OPC UA sessions of the PLC link: opening one, typed Writes, and the pulse session.

``drivers.plc.opcua.OpcUaTransport`` holds one :class:`UaSession` for its
inputs and outputs; :class:`OpcUaPulse` holds a second one on a private event
loop in a thread of its own, so the node-timed pulse never waits for the
node's busy event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.crypto import security_policies
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from drivers.plc.errors import PlcConfigError, PlcLinkError, PlcWriteRefused
from drivers.plc.iomap import OUTPUT_GROUPS, UaNode, next_seq
from drivers.plc.settings import OpcUaSettings
from drivers.plc.transport import LinkCounters, OutputValue

UA_ERRORS = (UaError, OSError, ConnectionError, TimeoutError, asyncio.TimeoutError)
"""What asyncua raises when a request or the connection fails."""


async def _make_client(s: OpcUaSettings) -> Client:
    client = Client(s.url, timeout=s.request_timeout_ms / 1000, watchdog_intervall=1.0)
    client.application_uri = s.application_uri
    client.name = "lineside"
    if s.user is not None:
        client.set_user(s.user)
        password = s.password()
        if password is not None:
            client.set_password(password)
    if s.security_policy != "None":
        assert s.certificate is not None and s.private_key is not None
        policy = getattr(security_policies, f"SecurityPolicy{s.security_policy}")
        await client.set_security(
            policy,
            str(s.certificate),
            str(s.private_key),
            s.private_key_password(),
            None if s.server_certificate is None else str(s.server_certificate),
            getattr(ua.MessageSecurityMode, s.security_mode),
        )
    return client


async def _resolve(client: Client, where: UaNode) -> Node:
    if where.node_id is not None:
        return client.get_node(where.node_id)
    assert where.browse_path is not None
    return await client.nodes.objects.get_child(list(where.browse_path))


class UaSession:
    """One connected client with its resolved nodes and output data types.

    ``lost`` is set when a request failed or the connection dropped.
    """

    def __init__(self, client: Client, nodes: dict[str, Node], vtypes: dict[str, ua.VariantType]):
        self.client = client
        self.nodes = nodes
        self.vtypes = vtypes
        self.names = {node.nodeid: name for name, node in nodes.items()}
        self.lost = asyncio.Event()

    async def write(self, values: Mapping[str, Any], timeout_s: float) -> list[ua.StatusCode]:
        """One Write request for ``values`` (in order), each with its variable's own type.

        Raises ``PlcLinkError``.
        """
        names = list(values)
        ids = [self.nodes[n].nodeid for n in names]
        dvs = [ua.DataValue(ua.Variant(values[n], self.vtypes[n])) for n in names]
        try:
            async with asyncio.timeout(timeout_s):
                return await self.client.uaclient.write_attributes(ids, dvs, AttributeIds.Value)
        except UA_ERRORS as exc:
            self.lost.set()
            raise PlcLinkError(f"write {names}: {type(exc).__name__}: {exc}") from exc

    @contextlib.contextmanager
    def patient(self, timeout_s: float) -> Iterator[None]:
        """Requests sent inside wait up to ``timeout_s`` instead of the running
        ``request_timeout_ms`` (setting up a subscription is slower than a Write)."""
        protocol = self.client.uaclient.protocol
        if protocol is None:
            yield
            return
        before = protocol.timeout
        protocol.timeout = timeout_s
        try:
            yield
        finally:
            protocol.timeout = before

    async def close(self) -> None:
        """Disconnect (at most 1 s; never raises)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.client.disconnect()


async def open_session(
    s: OpcUaSettings, names: Sequence[str], read: Sequence[str] = ()
) -> tuple[UaSession, dict[str, Any]]:
    """Connect, resolve ``names`` (I/O map entries), read output types and ``read`` values.

    Raises ``PlcLinkError`` or ``PlcConfigError`` (a node the server does not have).
    """
    client = await _make_client(s)
    try:
        async with asyncio.timeout(s.connect_timeout_ms / 1000):
            await client.connect()
    except (*UA_ERRORS, ValueError) as exc:
        with contextlib.suppress(Exception):
            client.disconnect_socket()
        raise PlcLinkError(f"cannot connect to {s.url}: {type(exc).__name__}: {exc}") from exc
    ok = False
    try:
        wanted = {**s.io.input_nodes(), **s.io.output_nodes()}
        nodes: dict[str, Node] = {}
        vtypes: dict[str, ua.VariantType] = {}
        async with asyncio.timeout(s.connect_timeout_ms / 1000):
            for name in names:
                try:
                    node = await _resolve(client, wanted[name])
                    if name in s.io.output_nodes():
                        vtypes[name] = await node.read_data_type_as_variant_type()
                except UaStatusCodeError as exc:
                    raise PlcConfigError(
                        f"io.{name}: {wanted[name].describe()} on {s.url}: {exc}"
                    ) from exc
                nodes[name] = node
            values = {}
            if read:
                got = await client.read_values([nodes[n] for n in read])
                values = dict(zip(read, got, strict=True))
        ok = True
        return UaSession(client, nodes, vtypes), values
    except (TimeoutError, UaError, OSError) as exc:
        raise PlcLinkError(f"{s.url}: setting up the session failed: {exc}") from exc
    finally:
        if not ok:
            with contextlib.suppress(Exception):
                await client.disconnect()


class OpcUaPulse:
    """The pulse session on a private event loop in its own thread (a ``PulseChannel``)."""

    def __init__(self, settings: OpcUaSettings, counters: LinkCounters) -> None:
        self._s = settings
        self._counters = counters
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="plc-pulse-loop", daemon=True
        )
        self._session: UaSession | None = None
        self._seq = 0
        self._lock = threading.Lock()
        self._names = [n for n in OUTPUT_GROUPS["fire"] if n in settings.io.output_nodes()]

    @property
    def connected(self) -> bool:
        """Whether the session is open and not lost."""
        return self._session is not None and not self._session.lost.is_set()

    async def open(self) -> None:
        """Start the pulse loop (once) and connect on it within ``connect_timeout_ms``.

        Raises ``PlcLinkError``, ``PlcConfigError`` or ``TimeoutError``.
        """
        if self._thread.ident is None:
            self._thread.start()
        async with asyncio.timeout(self._s.connect_timeout_ms / 1000):
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._connect(), self._loop))

    async def _connect(self) -> None:
        if self.connected:
            return
        if self._session is not None:
            await self._session.close()
            self._session = None
        t0 = time.monotonic_ns()
        session, values = await open_session(self._s, self._names, read=("fire_seq",))
        self._counters.fire_rtt.add(time.monotonic_ns() - t0)
        self._seq = int(values["fire_seq"] or 0)
        self._session = session

    async def _write(self, values: Mapping[str, OutputValue]) -> None:
        await self._connect()
        assert self._session is not None
        seq = next_seq(self._seq)
        out = {k: v for k, v in {**values, "fire_seq": seq}.items() if k in self._names}
        t0 = time.monotonic_ns()
        results = await self._session.write(out, self._s.fire_timeout_ms / 1000)
        self._counters.fire_rtt.add(time.monotonic_ns() - t0)
        bad = [(n, r) for n, r in zip(out, results, strict=True) if not r.is_good()]
        if bad:
            self._counters.refused_writes += 1
            raise PlcWriteRefused("fire", ", ".join(f"{n}: {r.name}" for n, r in bad))
        self._seq = seq

    def pulse(self, values: Mapping[str, OutputValue]) -> None:
        """Write the fire group on the pulse loop; block up to ``fire_timeout_ms`` for it.

        Raises ``PlcLinkError`` or ``PlcWriteRefused``.
        """
        with self._lock:
            fut = asyncio.run_coroutine_threadsafe(self._write(values), self._loop)
            try:
                fut.result(timeout=self._s.fire_timeout_ms / 1000)
            except concurrent.futures.TimeoutError as exc:
                fut.cancel()
                raise PlcLinkError("fire: no answer within fire_timeout_ms") from exc

    def close(self) -> None:
        """Close the session and stop the pulse loop (blocking, at most a few seconds)."""

        async def _close() -> None:
            if self._session is not None:
                await self._session.close()
                self._session = None

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_close(), self._loop).result(timeout=2.0)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(2.0)
        self._loop.close()
