"""
The terminal client's interactive face: an input line that incoming traffic
never overwrites, line editing, input history (Up/Down), Tab completion of
commands, names and rooms, a status line, typing hints.

prompt_toolkit (the line editor of IPython and ptpython) on Twisted's asyncio
reactor: ``patch_stdout`` prints what arrives above the line being typed, so
the view (:class:`tcpchat.ui.cli.TerminalView`) stays the same line-by-line
view it is through a pipe; only where lines come from and go to changes.
Chosen over urwid because it does exactly this with no layout of our own,
and its history, completion and editing are what terminal users know.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Iterable, List

from tcpchat.ui.commands import COMMANDS


def available() -> bool:
    """An interactive terminal on both ends, and prompt_toolkit installed."""
    try:
        import prompt_toolkit  # noqa: F401
    except ImportError:
        return False
    return sys.stdin.isatty() and sys.stdout.isatty()


def install_reactor() -> None:
    """Twisted on asyncio's loop (before anything imports the reactor)."""
    from twisted.internet import asyncioreactor

    asyncioreactor.install(asyncio.new_event_loop())


def words_for(client: Any, view: Any, before: str) -> List[str]:
    """What may complete the word being typed (``before``: the text up to the cursor)."""
    word = before.split(" ")[-1]
    if before == word and word.startswith("/"):
        return [c.split(" ")[0] for c, _ in COMMANDS]
    if word.startswith("#"):
        return ["#" + r for r in client.model.roomNames()]
    names = [n for n in client.users if n != client.name]
    return ["@" + n for n in names] if word.startswith("@") else names


def toolbar_text(client: Any, view: Any) -> str:
    """The status line: connection, conversation, unread counts elsewhere, transfers."""
    where = view.current
    unread = ", ".join(f"{conv} {count}" for conv, count in sorted(client.unread.items())
                       if count and conv.lower() != where.lower())
    parts = [client.state, where] + ([f"unread: {unread}"] if unread else [])
    if getattr(view.screen, "status", ""):
        parts.append(view.screen.status)
    if client.outbox:
        parts.append(f"{len(client.outbox)} waiting")
    return "  ·  ".join(parts)


class Prompt:
    """Reads the lines a person types and hands them to the view, until the view is done."""

    def __init__(self, view: Any, client: Any) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.completion import Completer, Completion
        from prompt_toolkit.history import InMemoryHistory

        self.view = view
        self.client = client

        class Words(Completer):
            def get_completions(self, document: Any, complete_event: Any) -> Iterable[Any]:
                before = document.text_before_cursor
                word = before.split(" ")[-1]
                for candidate in words_for(client, view, before):
                    if candidate.lower().startswith(word.lower()) and candidate != word:
                        yield Completion(candidate + " ", start_position=-len(word))

        # (erase_when_done: a sent line leaves the input; the conversation shows it as the message it became)
        self.session: Any = PromptSession(history=InMemoryHistory(), completer=Words(), complete_while_typing=False,
                                          bottom_toolbar=lambda: toolbar_text(client, view), reserve_space_for_menu=4,
                                          erase_when_done=True)
        self.session.default_buffer.on_text_changed += self._typed
        self.task: Any = None

    def _typed(self, buffer: Any) -> None:
        typed = buffer.text
        if typed.strip() and not typed.startswith("/") and not self.view.askingPasskey:
            self.client.typingNow(self.view.current)  # (the core sends at most one hint every few seconds)

    def refresh(self) -> None:
        """Ask again (the question changed: the passkey now, hidden)."""
        app = self.session.app
        if app.is_running:
            app.exit(result=None)

    def redraw(self) -> None:
        app = self.session.app
        if app.is_running:
            app.invalidate()

    async def run(self) -> None:
        from prompt_toolkit.patch_stdout import patch_stdout

        view = self.view
        with patch_stdout(raw=True):
            view.screen.out = sys.stdout  # (patched: lines go above the one being typed)
            for _ in range(10**9):  # for as long as the person types
                if getattr(view, "_quitting", False) and not view.askingPasskey:
                    await asyncio.sleep(0.1)  # leaving: no more input, but keep the line on screen
                    continue
                secret = view.askingPasskey
                try:
                    line = await self.session.prompt_async("New passkey (or /quit): " if secret else "› ",
                                                           is_password=secret)
                except EOFError:  # Ctrl+D
                    view.readConnectionLost()
                    continue
                except KeyboardInterrupt:  # Ctrl+C: leave (a second one leaves at once)
                    view.quit()
                    continue
                if line is None:
                    continue  # asked again (see refresh)
                view.lineReceived(line.encode("utf-8"))

    def start(self) -> None:
        self.task = asyncio.ensure_future(self.run())

    def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
