"""Dialog state (RFC 3261 section 12): ids, CSeq counters, route set and remote target.

Also knows where an in-dialog request goes. A dialog we answered (UAS) is *pinned* to the flow
its INVITE came from: BYE and re-INVITE go to that source IP:port over the same transport (for
TCP, the same connection or a new one to that same address), never to a host the unauthenticated
peer named in Contact, Via or Record-Route (those still shape the Request-URI and Route headers).
A dialog we started (UAC, towards an address the API chose) follows the first loose route, else
the remote target, over the flow when that is TCP or the URI names no IP; a next hop other than
the flow's host must be in the trusted networks (``sip_allow_cidrs``), else the flow is used.
Host names are never resolved here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from .message import (
    NameAddr,
    ParseError,
    Request,
    Response,
    build_request_head,
    parse_name_addr,
    split_header_list,
)
from .transaction import Dest


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An in-dialog request ready to send: its bytes, where they go and the Request-URI used."""

    data: bytes
    dest: Dest
    ruri: str


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_party: str  # our From header value in requests we send (with our tag)
    remote_party: str  # To header value in requests we send (with their tag)
    remote_target: str  # URI from the peer's Contact
    route_set: list[str] = field(default_factory=list)  # Route header values, in order
    local_seq: int = 1
    remote_seq: int | None = None
    flow: Dest | None = None  # the transport/peer the dialog was established over
    confirmed: bool = False
    pinned: bool = False  # in-dialog requests go to `flow` only (dialogs an inbound INVITE created)
    # UAC dialogs: may the next hop be this IP (not the flow's)? None: any. Else the flow is used.
    may_send_to: Callable[[str], bool] | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    def next_seq(self) -> int:
        self.local_seq += 1
        return self.local_seq

    def update_target(self, msg: Request | Response) -> None:
        """A Contact in a re-INVITE or its 2xx replaces the remote target (RFC 3261 12.2)."""
        contact = _first_contact(msg)
        if contact is not None:
            self.remote_target = str(contact.raw_uri)

    def request(
        self,
        method: str,
        via: Callable[[str], str],
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        cseq: int | None = None,
    ) -> Outgoing:
        """Build an in-dialog request (BYE, ACK, re-INVITE, INFO): the one place its header block is written.

        *via* makes the Via for the transport the request goes over; a new CSeq is taken unless
        *cseq* is given (an ACK repeats its INVITE's).
        """
        ruri, dest, routes = self.destination()
        seq = self.next_seq() if cseq is None else cseq
        hdrs = [("Via", via(dest.transport)), ("Max-Forwards", "70")]
        hdrs += [("Route", r) for r in routes]
        hdrs += [
            ("From", self.local_party),
            ("To", self.remote_party),
            ("Call-ID", self.call_id),
            ("CSeq", f"{seq} {method}"),
            *(headers or []),
        ]
        return Outgoing(build_request_head(method, ruri, hdrs, body), dest, ruri)

    def destination(self) -> tuple[str, Dest, list[str]]:
        """(Request-URI, Dest, Route headers) for a new in-dialog request."""
        routes = list(self.route_set)
        ruri = self.remote_target
        if self.pinned and self.flow is not None:
            try:
                first_route = parse_name_addr(routes[0]) if routes else None
            except ParseError:
                first_route = None  # a garbled Record-Route: sent on as it came
            if first_route is not None and "lr" not in first_route.uri.params:
                ruri = first_route.raw_uri
                routes = routes[1:] + [f"<{self.remote_target}>"]
            return ruri, self.flow, routes
        if routes:
            first = parse_name_addr(routes[0])
            target = first
            if "lr" not in first.uri.params:  # strict router: its URI becomes the Request-URI
                ruri = first.raw_uri
                routes = routes[1:] + [f"<{self.remote_target}>"]
            uri = target.uri
        else:
            uri = parse_name_addr(f"<{ruri}>").uri
        return ruri, self._dest_for(uri.host_plain, uri.port, uri.param("transport")), routes

    def _dest_for(self, host: str, port: int | None, transport: str | None) -> Dest:
        flow = self.flow
        tp = transport if transport in ("udp", "tcp") else (flow.transport if flow else "udp")
        try:
            ipaddress.ip_address(host)
            addr: tuple[str, int] | None = (host, port or 5060)
        except ValueError:
            addr = None  # a host name: we do not resolve, we use the flow instead
        if (
            addr is not None
            and flow is not None
            and addr[0] != flow.addr[0]
            and self.may_send_to is not None
            and not self.may_send_to(addr[0])
        ):
            addr = None  # a host only the peer named, outside the trusted networks: back over the flow
        if flow is not None and (addr is None or (tp == "tcp" and flow.transport == "tcp")):
            if addr is None:
                return flow
            return Dest("tcp", addr, flow.conn)
        return Dest(tp, addr or ("127.0.0.1", 5060))


def _first_contact(msg: Request | Response) -> NameAddr | None:
    for v in msg.get_all("contact"):
        if v != "*":
            try:
                return parse_name_addr(v)
            except ParseError:
                return None
    return None


def record_routes(msg: Request | Response) -> list[str]:
    out: list[str] = []
    for v in msg.raw_all("record-route"):
        out.extend(p.strip() for p in split_header_list(v))
    return out


def uas_dialog(req: Request, local_tag: str, flow: Dest, to_value: str) -> Dialog:
    """Dialog created by our 1xx/2xx to an INVITE (we are the UAS)."""
    contact = _first_contact(req)
    target = contact.raw_uri if contact is not None else req.from_.raw_uri
    return Dialog(
        call_id=req.call_id,
        local_tag=local_tag,
        remote_tag=req.from_tag or "",
        local_party=to_value,
        remote_party=req.get("from") or "",
        remote_target=target,
        route_set=record_routes(req),
        local_seq=0,
        remote_seq=req.cseq,
        flow=flow,
        pinned=True,
    )


def uac_dialog(local_party: str, local_tag: str, cseq: int, resp: Response, flow: Dest) -> Dialog:
    """Dialog created by a 2xx to our INVITE (route set is the Record-Route reversed)."""
    contact = _first_contact(resp)
    target = contact.raw_uri if contact is not None else resp.to.raw_uri
    return Dialog(
        call_id=resp.call_id,
        local_tag=local_tag,
        remote_tag=resp.to_tag or "",
        local_party=local_party,
        remote_party=resp.get("to") or "",
        remote_target=target,
        route_set=list(reversed(record_routes(resp))),
        local_seq=cseq,
        remote_seq=None,
        flow=flow,
        confirmed=True,
    )
