"""Where an operator action goes: the run's actor here, or the run's owner over the relay.

:class:`ActionRouter` is the Engine's part that carries operator actions
(engine/operator.py). An action is first decided on the stored state, so that what the run's
state refuses is refused at once and nothing is sent. Then it goes to the run's mailbox here:
the actor decides it again, authoritatively, in its normal drain, and answers once the events
are stored. When no actor here takes it (in a cluster, another node owns the run), it goes over
the store's relay (:class:`~flowweaver.ports.OperatorRelay`) to the owner, whose own router
answers it the same way; the caller then reads the new state from the shared store.

Waits are bounded: a node that owns the run answers within the caller's timeout, and when no
node takes a relayed request within ``RELAY_CLAIM_S`` (the owner died and its leases have not
lapsed yet), the action is tried here again, until the timeout ends it with
:class:`~flowweaver.errors.RunUnavailableError` (HTTP 503 with Retry-After).
"""

from __future__ import annotations

import threading
import time

import msgspec
import pykka
import structlog

from flowweaver.backoff import Backoff
from flowweaver.domain.run import RunState
from flowweaver.engine import operator
from flowweaver.engine.messages import OperatorCommand
from flowweaver.engine.operator import OperatorAction
from flowweaver.engine.supervisor import Supervisor
from flowweaver.errors import (
    EngineClosedError,
    FlowweaverError,
    InvalidCommandError,
    NotFoundError,
    RunUnavailableError,
    StoreError,
)
from flowweaver.ports import Clock, EventStore, Leases, OperatorRelay, RelayProvider

log = structlog.get_logger("flowweaver.engine")

DEFAULT_ACTION_TIMEOUT_S = 10.0
"""How long an action waits for the run's owner, here or on another node, by default."""
RELAY_CLAIM_S = 1.0
"""How long a relayed action waits for a node to take it before it is tried here again."""
RELAYED_ANSWER_S = 8.0
"""How long the owner waits for its run actor when it answers a relayed action."""
_AGAIN = Backoff(base=0.025, cap=0.5)
"""Pauses between tries while the run changes hands: 0.05 s, doubling to 0.5 s."""


class ActionRouter:
    """Carries operator actions to their run's actor, here or on the node that owns it."""

    def __init__(
        self,
        store: EventStore,
        supervisor: Supervisor,
        leases: Leases,
        clock: Clock,
        *,
        node: str,
        max_io_bytes: int,
    ) -> None:
        self.store = store
        self.supervisor = supervisor
        self.clock = clock
        self.max_io_bytes = max_io_bytes
        self.relay: OperatorRelay | None = None
        self._closing = threading.Event()
        if leases.shared and isinstance(store, RelayProvider):
            self.relay = store.open_operator_relay(
                node, owns=leases.holds, handle=self.answer_relayed
            )

    def act(self, action: OperatorAction, timeout: float = DEFAULT_ACTION_TIMEOUT_S) -> RunState:
        """Have the run's owner decide ``action``; return the run's state once it is stored.

        Raises:
            NotFoundError: no such run, or no such task.
            InvalidCommandError: the run or the task is not in a state that allows it.
            ValidationError: a hand-given output over the limit.
            RunUnavailableError: no node that owns the run answered within ``timeout``.
            EngineClosedError: the engine closed while the action waited.
        """
        run_id = action.run_id
        self._check(action)
        deadline = time.monotonic() + timeout
        tries = 0
        while True:
            if tries:  # the run changed hands under us: give the new owner a moment
                pause = min(_AGAIN.delay(tries), max(0.0, deadline - time.monotonic()))
                if self._closing.wait(pause):
                    raise EngineClosedError("the engine is closing")
            tries += 1
            answer = self._here(action, max(0.0, deadline - time.monotonic()))
            if isinstance(answer, RunState):
                return answer
            if answer is not None:
                raise answer
            if self.relay is None or tries > 1:
                self._check(action)  # the run may have ended meanwhile: then say why not
            if self.relay is None:
                raise InvalidCommandError(run_id, "the run could not take the request")
            if self._relayed(action, deadline):
                return self._stored(run_id)
            if time.monotonic() >= deadline:
                raise RunUnavailableError(
                    run_id,
                    f"no node that owns the run answered within {timeout:g} s (its owner may "
                    "be stopping or another node taking it over); try again in a moment",
                )

    def answer_relayed(self, run_id: str, body: bytes) -> bytes:
        """Answer an action another node relayed for a run this node owns (relay thread)."""
        try:
            action = operator.decode_action(body)
        except msgspec.DecodeError:
            log.warning("relayed_action_unreadable", run_id=run_id, size=len(body))
            return operator.encode_answer(None)
        if action.run_id != run_id:
            return operator.encode_answer(None)
        try:
            answer = self._here(action, RELAYED_ANSWER_S)
        except RunUnavailableError as e:
            return operator.encode_unavailable(str(e))
        return operator.encode_answer(answer)

    def close(self) -> None:
        """Stop relaying; callers waiting to try again give up."""
        self._closing.set()
        if self.relay is not None:
            self.relay.close()

    # --- steps ------------------------------------------------------------------------------

    def _stored(self, run_id: str) -> RunState:
        state = self.store.run_state(run_id)
        if state is None:
            raise NotFoundError("run", run_id)
        return state

    def _check(self, action: OperatorAction) -> None:
        """Decide ``action`` on the stored state, on a throwaway copy: refuse early."""
        state = self._stored(action.run_id)
        operator.decide(action, state, self.clock.now(), max_io_bytes=self.max_io_bytes)

    def _here(self, action: OperatorAction, timeout: float) -> RunState | FlowweaverError | None:
        """Hand ``action`` to the run's actor here (started if this node can own the run).

        Return the new state, the domain error, or None when no actor here takes it.

        Raises:
            RunUnavailableError: the actor did not answer within ``timeout``.
        """
        reply: pykka.Future[RunState | FlowweaverError | None] = pykka.ThreadingFuture()
        self.supervisor.deliver(action.run_id, OperatorCommand(action, reply))
        try:
            return reply.get(timeout=timeout)
        except pykka.Timeout:
            raise RunUnavailableError(
                action.run_id,
                "its actor did not store the action in time (the store may be slow or down); "
                "it may still be stored: read the run before trying again",
            ) from None

    def _relayed(self, action: OperatorAction, deadline: float) -> bool:
        assert self.relay is not None
        return relay_action(self.relay, action, deadline)


def relay_action(relay: OperatorRelay, action: OperatorAction, deadline: float) -> bool:
    """Send ``action`` to the run's owner over ``relay``; True when it was done there.

    False when no node took it, or the node that took it no longer owns the run. Used by
    :class:`ActionRouter` and by the command line's actions on a cluster's store.

    Raises:
        InvalidCommandError, NotFoundError, ValidationError: the owner refused it.
        RunUnavailableError: the owner took it and did not answer in time, or the relay failed.
    """
    run_id = action.run_id
    remaining = max(0.0, deadline - time.monotonic())
    try:
        answer = relay.request(
            run_id,
            operator.encode_action(action),
            claim_timeout=min(RELAY_CLAIM_S, remaining),
            timeout=remaining,
        )
    except TimeoutError:
        raise RunUnavailableError(
            run_id,
            "the node that owns the run took the action and did not answer in time; it may "
            "still be stored: read the run before trying again",
        ) from None
    except (StoreError, ValueError) as e:
        raise RunUnavailableError(run_id, f"the relay to the run's owner failed: {e}") from e
    if answer is None:
        return False
    try:
        result = operator.decode_answer(run_id, answer)
    except msgspec.DecodeError as e:
        raise RunUnavailableError(run_id, f"the owner's answer is unreadable: {e}") from e
    if isinstance(result, FlowweaverError):
        raise result
    return result
