"""A Server-Sent Events parser (the WHATWG rules) over lines, and the job event it yields."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Event:
    """One job event: ``id`` is its cursor (pass it as ``after``), ``type`` e.g. ``progress`` or ``succeeded``."""

    id: str | None
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None

    @property
    def terminal(self) -> bool:
        """The job's last event: it succeeded, failed or was cancelled."""
        return self.type.rsplit(".", 1)[-1] in TERMINAL

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Event:
        """An event of the JSON list: ``{"id", "type", "created_at", "data"}``."""
        data = item.get("data")
        return cls(
            id=None if item.get("id") is None else str(item["id"]),
            type=str(item.get("type", "")),
            data=data if isinstance(data, dict) else {"value": data},
            created_at=item.get("created_at"),
        )


@dataclass
class Message:
    """A raw SSE message: ``event``, ``data``, ``id`` (the last event id in force) and ``retry`` (ms)."""

    event: str
    data: str
    id: str | None
    retry: int | None = None

    def to_event(self) -> Event:
        """The job event: ``data`` is either the whole event object or only its ``data`` part."""
        try:
            payload = json.loads(self.data) if self.data else {}
        except json.JSONDecodeError:
            payload = {"value": self.data}
        if isinstance(payload, dict) and "type" in payload and "data" in payload:
            event = Event.from_json(payload)
            return Event(id=self.id or event.id, type=event.type or self.event, data=event.data, created_at=event.created_at)
        data = payload if isinstance(payload, dict) else {"value": payload}
        created = data.get("created_at") if isinstance(data.get("created_at"), str) else None
        return Event(id=self.id, type=self.event, data=data, created_at=created)


def parse(lines: Iterable[str], last_id: str | None = None) -> Iterator[Message]:
    """Messages from the stream's lines (without their line ends). A message with an empty data buffer only
    moves ``id``/``retry``; comments (``:``, keep-alives) are skipped; a message cut off at the end is dropped."""
    event, data, retry = "", [], None
    for line in lines:
        if not line:
            if data:
                yield Message(event=event or "message", data="\n".join(data), id=last_id, retry=retry)
            elif retry is not None:
                yield Message(event="", data="", id=last_id, retry=retry)
            event, data, retry = "", [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            if "\0" not in value:
                last_id = value or None
        elif name == "retry" and value.isdigit():
            retry = int(value)
