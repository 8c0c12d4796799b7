"""Events: the model and bus (bus.py), the outbox that delivers them after the command or tick group
that raised them, the on-disk journal, and webhook delivery (through the one egress policy)."""
