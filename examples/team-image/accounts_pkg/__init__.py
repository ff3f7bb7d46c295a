"""A team's own aggregate, packaged as a wheel and baked into an image built FROM foldline.

The image's pods run it with ``foldline command-handler --aggregate accounts_pkg:Accounts``; the
EventSourcedAggregate names it in ``spec.aggregate`` and the image in ``spec.image``.
"""

from __future__ import annotations

from dataclasses import dataclass

from foldline import Aggregate, Decision, Rejection


@dataclass(frozen=True)
class Deposit:
    amount: int


@dataclass(frozen=True)
class Deposited:
    amount: int


@dataclass(frozen=True)
class Account:
    balance: int = 0


class Accounts(Aggregate[Account]):
    name = "accounts"
    state_type = Account
    commands = (Deposit,)
    events = (Deposited,)

    def initial_state(self) -> Account:
        return Account()

    def decide(self, state: Account, command: Deposit) -> Decision:
        if command.amount <= 0:
            return Rejection("deposit a positive amount")
        return [Deposited(command.amount)]

    def evolve(self, state: Account, event: Deposited) -> Account:
        return Account(state.balance + event.amount)
