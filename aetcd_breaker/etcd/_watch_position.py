"""Where a watch stands in etcd's history: what it delivered, where to resume."""

from __future__ import annotations

__all__ = ["Position"]


class Position:
    """The delivery record of one watch, fed event by event in stream order.

    etcd numbers every change with a revision; one revision holds one event
    per key a transaction wrote, listed in the same order by every stream. A
    watch response never splits a revision unless the watch asked for
    fragments (then only the last fragment has ``fragment`` unset), and a
    stream from a revision lists every event from that revision on.

    So a position is: every event up to ``done`` was delivered, plus the
    first ``count`` events of revision ``rev`` when ``rev`` is above ``done``
    (a revision cut in the middle). A new stream resumes at ``rev`` and
    skips what was delivered of it, or else at ``done + 1``.
    """

    __slots__ = ("_at", "_index", "_stream", "count", "done", "rev")

    def __init__(self, done: int) -> None:
        self.done = done
        self.rev = done
        self.count = 0
        # Which event of revision ``_at`` of ``_stream`` comes next.
        self._stream: object = None
        self._at = 0
        self._index = 0

    def __repr__(self) -> str:
        return f"<Position done={self.done} rev={self.rev} count={self.count}>"

    def resume_revision(self) -> int:
        """The revision a new stream must start from to lose nothing."""
        return self.rev if self.rev > self.done else self.done + 1

    def admit(self, stream: object, revision: int) -> bool:
        """Take the next event of ``stream``: ``True`` if it is new (and now delivered).

        Events must come in the order ``stream`` lists them; events of several
        streams may follow one another, each stream's in order.
        """
        if stream is not self._stream or revision != self._at:
            self._stream = stream
            self._at = revision
            self._index = 0
        index = self._index
        self._index += 1
        if revision <= self.done or revision < self.rev:
            return False
        if revision == self.rev:
            if index < self.count:
                return False
        else:
            # The first event of a later revision: every one before it is in.
            self.done = revision - 1
            self.rev = revision
            self.count = 0
        self.count += 1
        return True

    def complete(self, revision: int) -> None:
        """Every event up to ``revision`` was delivered (or was no news)."""
        if revision > self.done:
            self.done = revision
