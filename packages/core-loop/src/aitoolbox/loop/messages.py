"""Messages between callbacks: ``tl.message_service`` (the original AIToolbox's message passing).

A callback writes a value under a key; others read every value written under it. Each message says how long it
lives: until the end of the epoch (the default), until it is read, forever, or it replaces the key's earlier ones.

Example:
    >>> service = MessageService()
    >>> service.write_message("best_val", 0.31)
    >>> service.write_message("note", "lr halved", [MessageHandling.UNTIL_READ])
    >>> service.read_messages("best_val"), service.read_messages("note"), service.read_messages("note")
    ([0.31], ['lr halved'], [])
    >>> service.end_of_epoch_trigger()
    >>> service.read_messages("best_val") is None
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from aitoolbox.loop.errors import LoopConfigError

__all__ = ["Message", "MessageHandling", "MessageService"]


class MessageHandling(Enum):
    """How long a message lives."""

    KEEP_FOREVER = "keep_forever"
    UNTIL_END_OF_EPOCH = "until_end_of_epoch"
    UNTIL_READ = "until_read"
    OVERWRITE = "overwrite"


@dataclass
class Message:
    """A value written under ``key``, with its lifetime settings."""

    key: str
    value: Any
    msg_handling_settings: list[MessageHandling]


class MessageService:
    """The loop's message board (``tl.message_service``); the loop calls :meth:`end_of_epoch_trigger` after every
    epoch's callbacks."""

    def __init__(self) -> None:
        self.message_store: dict[str, list[Message]] = {}

    def read_messages(self, key: str) -> list[Any] | None:
        """Every value written under ``key`` (oldest first; those marked ``UNTIL_READ`` are gone after this), or
        ``None`` when nothing was ever written under it."""
        if key not in self.message_store:
            return None
        messages = self.message_store[key]
        self.message_store[key] = [m for m in messages if MessageHandling.UNTIL_READ not in m.msg_handling_settings]
        return [m.value for m in messages]

    def write_message(
        self,
        key: str,
        value: Any,
        msg_handling_settings: MessageHandling | list[MessageHandling] = MessageHandling.UNTIL_END_OF_EPOCH,
    ) -> None:
        """Write ``value`` under ``key``; ``OVERWRITE`` (alone or with one other setting) replaces the earlier ones.

        Raises:
            LoopConfigError: a setting that is not a :class:`MessageHandling`, or two that cannot be combined.
        """
        settings = self.validate_msg_handling_settings(msg_handling_settings)
        message = Message(key, value, settings)
        if MessageHandling.OVERWRITE in settings:
            self.message_store[key] = [message]
        else:
            self.message_store.setdefault(key, []).append(message)

    def end_of_epoch_trigger(self) -> None:
        """Drop the messages that live until the end of the epoch (and keys left with none)."""
        for key in list(self.message_store):
            kept = [
                m for m in self.message_store[key] if MessageHandling.UNTIL_END_OF_EPOCH not in m.msg_handling_settings
            ]
            if kept:
                self.message_store[key] = kept
            else:
                del self.message_store[key]

    @staticmethod
    def validate_msg_handling_settings(settings: object) -> list[MessageHandling]:
        """The settings as a list, checked."""
        listed = settings if isinstance(settings, list) else [settings]
        bad = [s for s in listed if not isinstance(s, MessageHandling)]
        if bad or not listed:
            raise LoopConfigError(
                f"msg_handling_settings must be a MessageHandling or a list of them, got {settings!r}"
            )
        if len(listed) > 1 and MessageHandling.OVERWRITE not in listed:
            raise LoopConfigError(
                f"msg_handling_settings {listed} cannot be combined: only OVERWRITE combines with another setting"
            )
        return listed  # type: ignore[return-value]
