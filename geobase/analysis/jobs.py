"""Admission and lifetime of analysis jobs (OGC API - Processes async execution): how many run
at once, how many may wait, how long one may take, who may read or dismiss it.

Why here and not in each router: an anonymous caller can submit as many jobs as the rate
limit lets through; without one bound 40 of them ran at once (89 database connections). The
scheduler admits a job only when its caller and the whole server have queue room (else 429 /
503 with Retry-After), starts it only when a run slot is free (per caller and in total, so
one caller cannot take every slot), and cancels it at its wall-clock limit or on dismissal.

Owners: a keyed caller owns its jobs by key id. Anonymous callers get an unguessable token at
submission, carried in the jobID they are given (``<uuid>.<token>``, so every OGC API -
Processes client keeps it, whether it follows links or builds ``/jobs/{jobID}/results``); the
job's owner is a hash of it, so knowing the job's uuid is not enough to read its results, and
the token itself is never stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from geobase.errors import ServiceUnavailable, TooManyRequests
from geobase.security import LayerAccess, Principal, can_see, hidden_attributes
from geobase.settings import Settings
from geobase.specs import Registry

ANON_PREFIX = "anon:"


def new_owner_token() -> str:
    """A token for an anonymous caller's job (about 192 bits)."""
    return secrets.token_urlsafe(24)


def owner_of(principal: Principal, token: str | None) -> str:
    """Who owns a job: the key id (key names are not unique), or the hash of the anonymous token."""
    if principal.key_id:
        return principal.key_id
    if not token:
        return ANON_PREFIX + "-"  # matches no stored owner: a token is needed
    return ANON_PREFIX + hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:40]


def may_read(principal: Principal, owner: str, token: str | None) -> bool:
    """Owner (by key or token) or an admin."""
    if principal.is_admin:
        return True
    return secrets.compare_digest(owner.encode(), owner_of(principal, token).encode())


def view_of(principal: Principal, registry: Registry, layers: list[str]) -> dict[str, list[str]]:
    """What a job read, as stored with it: per layer, the attributes masked for its caller."""
    return {n: sorted(hidden_attributes(principal, registry.layers[n])) for n in layers if n in registry.layers}


def still_visible(principal: Principal, registry: Registry, accesses: list[LayerAccess],
                  view: dict[str, list[str]]) -> bool:
    """Whether the caller may still see everything the job read (results re-check access: a
    revoked layer, or an attribute masked since, makes the stored results unreadable)."""
    if principal.is_admin:
        return True
    by_name = {a.name: a for a in accesses}
    for name, hidden_then in view.items():
        a = by_name.get(name)
        if a is None or name not in registry.layers or not can_see(principal, a):
            return False
        if not hidden_attributes(principal, registry.layers[name]) <= set(hidden_then):
            return False
    return True


@dataclass
class JobScheduler:
    """Run slots and queue room, per caller and in total (see the module docstring)."""

    settings: Settings
    running: Counter = field(default_factory=Counter)
    waiting: Counter = field(default_factory=Counter)
    tasks: dict[str, asyncio.Task] = field(default_factory=dict)
    _cond: asyncio.Condition | None = None

    @property
    def cond(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    def admit(self, who: str) -> None:
        """Reserve queue room for a job of ``who`` or refuse it (429 for the caller's own bound,
        503 when the server's queue is full)."""
        s = self.settings
        mine = self.running[who] + self.waiting[who]
        if mine >= s.jobs_max_running_per_caller + s.jobs_max_queued_per_caller:
            raise TooManyRequests(f"you have {mine} jobs running or waiting (limit "
                                  f"{s.jobs_max_running_per_caller + s.jobs_max_queued_per_caller}); wait for one "
                                  "to finish or dismiss one (DELETE /jobs/{id})", retry_after=10)
        total_waiting = sum(self.waiting.values())
        free_slot = sum(self.running.values()) < s.jobs_max_running and self.running[who] < s.jobs_max_running_per_caller
        if not free_slot and total_waiting >= s.jobs_max_queued:
            raise ServiceUnavailable(f"the job queue is full ({total_waiting} waiting); retry later", retry_after=30)
        self.waiting[who] += 1

    async def run(self, job_id: str, who: str, work: Callable[[], Awaitable[None]],
                  on_start: Callable[[], Awaitable[None]] | None = None) -> None:
        """Wait for a run slot, then run ``work`` (which applies the wall-clock limit itself, so
        that it can tell a timeout from a dismissal)."""
        s = self.settings
        started = False
        try:
            async with self.cond:
                await self.cond.wait_for(lambda: sum(self.running.values()) < s.jobs_max_running
                                         and self.running[who] < s.jobs_max_running_per_caller)
                self.waiting[who] -= 1
                self.running[who] += 1
                started = True
            if on_start is not None:
                await on_start()
            await work()
        finally:
            async with self.cond:
                if started:
                    self.running[who] -= 1
                else:
                    self.waiting[who] -= 1
                self.running += Counter()  # drop zero counts
                self.waiting += Counter()
                self.cond.notify_all()
            self.tasks.pop(job_id, None)

    def start(self, job_id: str, coro) -> asyncio.Task:
        task = asyncio.create_task(coro, name=f"job-{job_id}")
        self.tasks[job_id] = task
        return task

    def cancel(self, job_id: str) -> bool:
        """Cancel a job of this process (waiting or running); False if it is not here."""
        task = self.tasks.get(job_id)
        if task is None or task.done():
            return False
        task.cancel()
        return True
