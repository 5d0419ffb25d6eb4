"""The pipeline: which stage runs when (`spec`), the runner of one hop (`runner`), the reads and
writes it makes (`store`), what a stage is lent (`context`), publishing the next hop (`dispatch`),
what people do to a ticket (`human`), the sweeper (`sweeper`) and what observers are told
(`events`). The callback outbox is `tickets.webhooks` (handed each settled ticket by `dispatch`), the side-effect ledger `agents.tools`.

Kept free of imports: celeryconfig reads `agents.pipeline.spec` before Django's apps are ready.
"""
