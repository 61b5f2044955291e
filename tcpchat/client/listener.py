"""What the client core tells a user interface: the listener contract."""

from __future__ import annotations

from typing import Any, Dict, List

from zope.interface import Interface


class IChatListener(Interface):
    """What a user interface hears from the client core."""

    def stateChanged(state: str, detail: str) -> None:
        """Connection state changed (``connecting``, ``connected``, ``reconnecting``, ``disconnected``, ``failed``)."""

    def welcomed(info: Dict[str, Any]) -> None:
        """Logged in; ``info`` is the server's welcome frame."""

    def eventReceived(event: Dict[str, Any], replay: bool) -> None:
        """A new event of the conversation (never one already reported)."""

    def synced() -> None:
        """History/catch-up is complete; live traffic follows."""

    def messageAcked(cid: str, event: Dict[str, Any]) -> None:
        """A message this user sent is stored (``event`` has its id and time)."""

    def usersChanged(users: List[str]) -> None:
        """Who is online changed."""

    def transferChanged(transfer: Any) -> None:
        """An upload or download progressed, finished or failed."""

    def errorReceived(code: str, message: str) -> None:
        """The server refused something; ``message`` is for people."""

    def historyPage(events: List[Dict[str, Any]], more: bool) -> None:
        """Older events asked for with :meth:`ChatClient.loadOlder`."""

    def roomsChanged(rooms: List[str]) -> None:
        """The rooms this user is in changed (names, the default room first)."""

    def presenceChanged(name: str, away: bool, status: str) -> None:
        """Someone went away, came back or changed their status line."""

    def typingChanged(conv: str, names: List[str]) -> None:
        """Who is typing in conversation ``conv`` now (see :func:`conversation_of`)."""

    def seenChanged(conv: str) -> None:
        """Someone's read marker in ``conv`` moved; ask :meth:`ChatClient.seenBy`."""

    def eventRemoved(event: Dict[str, Any], conv: str) -> None:
        """A message was deleted (by its sender or an operator): take it off the screen."""

    def eventChanged(event: Dict[str, Any], change: Dict[str, Any], conv: str) -> None:
        """A message was edited or got a reaction (``change``, the edit or react event): ``event`` is it now."""

    def profileChanged(name: str, profile: Dict[str, Any]) -> None:
        """``name``'s bio or picture changed (``profile``: ``bio``, ``picture``, each only when set)."""

    def notice(text: str) -> None:
        """Something to tell the user that is not part of a conversation (operator replies, …)."""


class ChatListener:
    """A listener that ignores everything; subclass what you need."""

    def stateChanged(self, state: str, detail: str) -> None:
        pass

    def welcomed(self, info: Dict[str, Any]) -> None:
        pass

    def eventReceived(self, event: Dict[str, Any], replay: bool) -> None:
        pass

    def synced(self) -> None:
        pass

    def messageAcked(self, cid: str, event: Dict[str, Any]) -> None:
        pass

    def usersChanged(self, users: List[str]) -> None:
        pass

    def transferChanged(self, transfer: Any) -> None:
        pass

    def errorReceived(self, code: str, message: str) -> None:
        pass

    def historyPage(self, events: List[Dict[str, Any]], more: bool) -> None:
        pass

    def roomsChanged(self, rooms: List[str]) -> None:
        pass

    def presenceChanged(self, name: str, away: bool, status: str) -> None:
        pass

    def typingChanged(self, conv: str, names: List[str]) -> None:
        pass

    def seenChanged(self, conv: str) -> None:
        pass

    def eventRemoved(self, event: Dict[str, Any], conv: str) -> None:
        pass

    def eventChanged(self, event: Dict[str, Any], change: Dict[str, Any], conv: str) -> None:
        pass

    def profileChanged(self, name: str, profile: Dict[str, Any]) -> None:
        pass

    def notice(self, text: str) -> None:
        pass


# connection states, as ``stateChanged`` reports them
CONNECTING = "connecting"
CONNECTED = "connected"
RECONNECTING = "reconnecting"
DISCONNECTED = "disconnected"
FAILED = "failed"
