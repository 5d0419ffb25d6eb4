"""The client contract's outbound side: the callbacks a client receives when its ticket settles.

- `schedule`: the retry schedule, and when a drain runs (`callback_due` after a terminal commit);
- `outbox`: Postgres is the outbox (`Ticket.callback_due_at`): claim under a lease, settle on the
  delivery key, the ledger (`CallbackDelivery`);
- `delivery`: the drain, the thread pool, each client's share of it, the POST;
- `breaker`: a circuit breaker per client, for an endpoint that keeps failing;
- `payload` and `signing`: what a callback says, and its Standard Webhooks signature and secrets;
- `client`: the guarded HTTP clients (tenants' callbacks, and the operator's downstream webhooks);
- `resend`: a settled ticket's callback sent again; `tasks`: the drain task.

The pipeline (agents) hands a settled ticket down by calling `callback_due`; nothing here imports it.
"""

from tickets.webhooks.resend import callback_resend
from tickets.webhooks.schedule import callback_due, drain_schedule

__all__ = ["callback_due", "callback_resend", "drain_schedule"]
