"""Running several mediasrv nodes as one: node identity, HTTP forwarding to an id's owner, ``mediasrv cluster``."""
