"""The original AIToolbox module path of the message service (``tl.message_service``)."""

from aitoolbox.loop.messages import Message, MessageHandling, MessageService

__all__ = ["Message", "MessageHandling", "MessageService"]
