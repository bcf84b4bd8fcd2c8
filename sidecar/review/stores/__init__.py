"""The review store's implementations: ``sql`` holds the statements and the logic
both share; ``sqlite`` and ``postgres`` hold only connections, transactions and the
translation of their driver's errors."""
